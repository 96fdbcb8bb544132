"""Dispatch settings fail fast on secrets and incoherent timings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.dispatch.settings import DispatchSettings

GOOD = "0123456789abcdef0123"


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        # the placeholder people leave in compose files
        ("changeme", "default placeholder"),
        # case and whitespace do not disguise it
        ("  ChangeMe ", "default placeholder"),
        # another classic default
        ("password", "default placeholder"),
        # random but too short to resist guessing
        ("a1b2c3", "at least 16"),
    ],
)
def test_a_default_or_short_admin_token_is_refused(token: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        DispatchSettings(admin_token=token)


def test_the_admin_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOTLINE_DISPATCH_ADMIN_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="admin_token"):
        DispatchSettings()  # type: ignore[call-arg]


def test_settings_come_from_prefixed_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOTLINE_DISPATCH_ADMIN_TOKEN", GOOD)
    monkeypatch.setenv("SHOTLINE_DISPATCH_RETRY_SCHEDULE_S", "[0.5, 1, 2]")
    monkeypatch.setenv("SHOTLINE_INCIDENTS_TOPIC", "x.incidents")
    settings = DispatchSettings()  # type: ignore[call-arg]
    assert settings.admin_token.get_secret_value() == GOOD
    assert settings.retry_schedule_s == (0.5, 1.0, 2.0)
    assert settings.max_attempts == 4
    assert settings.incidents_topic == "x.incidents"
    assert GOOD not in repr(settings)  # the secret is never printed


def test_a_lease_shorter_than_one_http_attempt_is_refused() -> None:
    # pool 2 + connect 2 + write 5 + read 5 = 14 s > 10 s lease: two workers could both send
    with pytest.raises(ValidationError, match="lease_s"):
        DispatchSettings(admin_token=GOOD, lease_s=10)
