"""Dispatch settings: environment variables prefixed ``SHOTLINE_DISPATCH_`` (plus the common ones).

Secrets fail fast: the service refuses to start without an admin token, or with a default-
looking one ("changeme", "admin", …), or a short one. Timing fields are validated together
(a claim lease shorter than one HTTP attempt would let two instances send the same row).
"""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Network, IPv6Network

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.dispatch.retry import DEFAULT_SCHEDULE_S, RetryPolicy
from shared.settings import CommonSettings

#: Values people leave in config files; never accepted as the admin token.
_DEFAULT_SECRETS = {
    "changeme",
    "change-me",
    "change_me",
    "admin",
    "password",
    "secret",
    "token",
    "default",
    "test",
    "example",
}
MIN_ADMIN_TOKEN_LENGTH = 16


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class DispatchSettings(CommonSettings):
    """Every ``SHOTLINE_DISPATCH_*`` variable (e.g. ``SHOTLINE_DISPATCH_ADMIN_TOKEN``)."""

    model_config = SettingsConfigDict(
        env_prefix="SHOTLINE_DISPATCH_", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- admin API ------------------------------------------------------------------------
    admin_token: SecretStr = Field(
        description="Bearer token of the admin API (required; at least 16 characters)"
    )
    host: str = Field(default="127.0.0.1", description="Admin API listen address")
    port: int = Field(default=8082, ge=0, le=65535, description="Admin API port (0 = any free)")
    readiness_timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="/readyz: how long Kafka (a metadata request) and PostgreSQL may take",
    )

    # --- audio clips in alerts --------------------------------------------------------------
    clip_url_secret: SecretStr | None = Field(
        default=None,
        description="Signs the expiring clip links in JSON alerts (at least 16 characters; "
        "unset: alerts carry no clip links)",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8082",
        description="Base URL of this API as alert receivers reach it (clip links)",
    )
    clip_link_ttl_s: float = Field(
        default=86_400.0, gt=0, le=30 * 86_400,
        description="A clip link works this long after the incident version was published",
    )

    # --- consumer -------------------------------------------------------------------------
    group_id: str = Field(
        default="shotline-dispatch",
        min_length=1,
        description="Kafka consumer group; instances in one group split the partitions",
    )
    consume: bool = Field(default=True, description="Consume incidents (off: API/workers only)")
    max_poll_records: int = Field(
        default=200, ge=1, le=10_000, description="Most incident records taken per fetch"
    )
    same_shot_window_s: float = Field(
        default=1.0,
        ge=0,
        description="Incidents of different zones whose rounds lie this close in time ...",
    )
    same_shot_distance_m: float = Field(
        default=100.0,
        ge=0,
        description="... and whose locations lie within this (or their two 95 % radii added, "
        "if more) are one shot heard across a zone boundary: a subscriber alerted to one is "
        "not alerted to the other",
    )
    places_refresh_s: float = Field(
        default=30.0,
        gt=0,
        description="Re-read the city's layers and sensors this often, s (a layer load "
        "refreshes at once by NOTIFY; this catches sensor changes)",
    )
    dlq_limit: int = Field(default=100, ge=1, description="Poison messages to <topic>.dlq/window")
    dlq_window_s: float = Field(default=60.0, gt=0, description="Dead-letter budget window, s")
    db_retry_deadline_s: float = Field(
        default=60.0, gt=0, description="Give up (crash, be restarted) after DB errors this long"
    )

    # --- delivery workers -----------------------------------------------------------------
    workers: bool = Field(default=True, description="Run delivery workers in this instance")
    instance_id: str = Field(default_factory=_instance_id, description="Shown as claim owner")
    max_in_flight: int = Field(default=128, ge=1, le=10_000, description="Sends at once")
    per_host_concurrency: int = Field(
        default=8, ge=1, le=1000, description="Sends at once to one receiver (host:port)"
    )
    claim_batch: int = Field(default=64, ge=1, le=10_000, description="Rows claimed per query")
    lease_s: float = Field(
        default=30.0, gt=0, description="A claim expires after this; then another worker retries"
    )
    poll_interval_s: float = Field(
        default=0.5, gt=0, description="Longest idle wait between claims (NOTIFY wakes sooner)"
    )

    # --- HTTP (webhooks, push services) ---------------------------------------------------
    allowed_target_networks: tuple[IPv4Network | IPv6Network, ...] = Field(
        default=(),
        max_length=1000,
        description="Private networks that hold real receivers (JSON list of CIDRs, e.g. "
        '["10.20.0.0/16"]). Alerts go only to public addresses and these: never to loopback, '
        "link-local (cloud metadata) or other private addresses unless listed here",
    )
    connect_timeout_s: float = Field(default=2.0, gt=0, description="HTTP connect timeout, s")
    read_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for a receiver's answer, s"
    )
    write_timeout_s: float = Field(default=5.0, gt=0, description="HTTP write timeout, s")
    pool_timeout_s: float = Field(
        default=2.0, gt=0, description="Longest wait for a free HTTP connection, s"
    )

    # --- retry policy -----------------------------------------------------------------------
    retry_schedule_s: tuple[float, ...] = Field(
        default=DEFAULT_SCHEDULE_S,
        min_length=0,
        max_length=100,
        description="Delay after the n-th failed attempt (JSON list); len + 1 attempts, then "
        "dead-letter",
    )
    retry_jitter_ratio: float = Field(default=0.2, ge=0, lt=1, description="+/- spread")
    retry_max_age_s: float = Field(
        default=86_400.0,
        gt=0,
        description="No retry later than this after the first attempt; a pending row this "
        "old (from its first attempt, else from when it was queued or replayed) goes to dead "
        "letter even while its receiver's circuit is open",
    )
    retry_after_cap_s: float = Field(
        default=3600.0, ge=0, description="Longest Retry-After honoured"
    )

    # --- circuit breaker per endpoint -----------------------------------------------------
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive failures to open")
    breaker_reset_s: float = Field(default=30.0, gt=0, description="Open this long, then probe")

    # --- signing secrets ------------------------------------------------------------------
    secret_overlap_s: float = Field(
        default=86_400.0, ge=0, description="Default time a rotated-out secret keeps signing"
    )

    # --- message content ------------------------------------------------------------------
    sender: str = Field(
        default="shotline.local",
        pattern=r"^[^\s,]+$",
        description="This installation's id in alerts (CAP <sender>, EIDO agency, JSON sender)",
    )

    # --- officer push ---------------------------------------------------------------------
    vapid_private_key: SecretStr | None = Field(
        default=None, description="VAPID private key (PEM or base64url raw) for Web Push"
    )
    vapid_subject: str = Field(
        default="mailto:dispatch@example.invalid", description="VAPID 'sub' claim"
    )
    webpush_ttl_s: int = Field(
        default=300,
        ge=0,
        le=2_419_200,
        description="How long a push service / FCM keeps an undelivered officer alert, s",
    )
    fcm_service_account: SecretStr | None = Field(
        default=None, description="FCM service-account JSON (inline) or a path to it"
    )
    fcm_base_url: str = Field(
        default="https://fcm.googleapis.com",
        description="FCM HTTP v1 base URL (messages go to <base>/v1/projects/<id>/messages:send)",
    )
    fcm_token_url: str | None = Field(
        default=None, description="OAuth token URL; default: the service account's token_uri"
    )

    db_pool_size: int = Field(default=10, ge=2, le=200, description="PostgreSQL connections")

    # --- review, silences, console --------------------------------------------------------
    review_deadline_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A review-required subscription gets an undecided incident marked "
        "unreviewed after this long, s",
    )
    silence_gunfire_floor: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Gunfire at or above this probability is never silenced unless the "
        "silence sets include_high_gunfire",
    )
    silence_release_relevance_s: float = Field(
        default=600.0,
        gt=0,
        description="A silenced incident is still delivered when its silence ends if its "
        "last round is at most this old, s",
    )
    sweep_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often review deadlines and silence ends are checked, s",
    )
    console_locator_metrics_url: str | None = Field(
        default="http://127.0.0.1:9102/metrics",
        description="The locator's /metrics, read by the console's sensor page for each "
        "sensor's clock-drift health (median residual, flagged); unset: not shown",
    )
    console_tile_url: str | None = Field(
        default=None,
        description="Basemap tile URL template for the console ({z}/{x}/{y}); unset: a "
        "scaled plane with sensors, geofences and incidents, no network needed",
    )

    def gate_settings(self):  # type: ignore[no-untyped-def]
        from services.dispatch.holds import GateSettings

        return GateSettings(
            review_deadline_s=self.review_deadline_s,
            gunfire_floor=self.silence_gunfire_floor,
            release_relevance_s=self.silence_release_relevance_s,
        )

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule_s) + 1

    def retry_policy(self) -> RetryPolicy:
        """The webhook retry policy (push channels adjust it, see push.retry_policy)."""
        from datetime import timedelta

        return RetryPolicy(
            schedule_s=self.retry_schedule_s,
            jitter_ratio=self.retry_jitter_ratio,
            max_age=timedelta(seconds=self.retry_max_age_s),
            retry_after_cap_s=self.retry_after_cap_s,
        )

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.strip().lower() in _DEFAULT_SECRETS:
            raise ValueError("is a default placeholder; set a random token (openssl rand -hex 32)")
        if len(raw) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
        return value

    @field_validator("clip_url_secret")
    @classmethod
    def _strong_clip_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        raw = value.get_secret_value()
        if raw.strip().lower() in _DEFAULT_SECRETS or len(raw) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be a random secret of at least {MIN_ADMIN_TOKEN_LENGTH} characters"
            )
        return value

    @model_validator(mode="after")
    def _coherent_timing(self) -> DispatchSettings:
        one_attempt = (
            self.pool_timeout_s
            + self.connect_timeout_s
            + self.write_timeout_s
            + self.read_timeout_s
        )
        if self.lease_s <= one_attempt:
            raise ValueError(
                f"lease_s ({self.lease_s}) must exceed the longest HTTP attempt "
                f"({one_attempt:.1f} s = pool + connect + write + read timeouts)"
            )
        if any(d < 0 for d in self.retry_schedule_s):
            raise ValueError("retry_schedule_s delays must be >= 0")
        return self
