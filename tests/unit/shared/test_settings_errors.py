"""Bad settings end in one line naming the environment variable to fix, not a field name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from shared.kafka import build_consumer, build_producer
from shared.settings import CommonSettings, KafkaConnection

runner = CliRunner()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # (what the operator set, the line they read)
        (
            {"SHOTLINE_DISPATCH_ADMIN_TOKEN": "short"},
            "error: invalid settings: SHOTLINE_DISPATCH_ADMIN_TOKEN: must be at least 16 "
            "characters",
        ),
        ({}, "error: invalid settings: SHOTLINE_DISPATCH_ADMIN_TOKEN: required, not set"),
        (
            {"SHOTLINE_DISPATCH_ADMIN_TOKEN": "0123456789abcdefgh", "DATABASE_URL": "mysql://x"},
            "error: invalid settings: DATABASE_URL: must start with postgresql://",
        ),
        (
            {
                "SHOTLINE_DISPATCH_ADMIN_TOKEN": "0123456789abcdefgh",
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            },
            "error: invalid settings: KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
    ],
)
def test_a_settings_error_names_the_environment_variable(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOTLINE_DISPATCH_ADMIN_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["dispatch"])
    assert result.exit_code == 2
    assert result.output.strip() == expected


def test_a_tls_file_that_is_not_there_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", "/nonexistent/ca.pem")
    monkeypatch.setenv("SHOTLINE_DISPATCH_ADMIN_TOKEN", "0123456789abcdefgh")
    result = runner.invoke(app, ["dispatch"])
    assert result.output.strip() == (
        "error: invalid settings: KAFKA_SSL_CAFILE: /nonexistent/ca.pem is not a readable file"
    )


async def test_sasl_over_tls_settings_reach_every_kafka_client() -> None:
    """The producer and consumer of a service connect with the cluster's security settings
    (the admin client that creates topics takes the same options)."""
    import certifi

    settings = CommonSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=Path(certifi.where()),
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="shotline-ingest",
        kafka_sasl_password="s3cret-from-the-vault",  # type: ignore[arg-type]
        topic_replication_factor=3,
    )
    connection = settings.kafka_connection()
    assert connection.replication_factor == 3
    producer = build_producer("kafka-1:9093", client_id="p", connection=connection)
    consumer = build_consumer(
        "kafka-1:9093", group_id="g", client_id="c", session_timeout_ms=6000, connection=connection
    )
    for kafka in (producer.client, consumer._client):  # never started: nothing to close
        assert kafka._security_protocol == "SASL_SSL"
        assert kafka._sasl_mechanism == "SCRAM-SHA-512"
        assert kafka._sasl_plain_username == "shotline-ingest"
        assert kafka._sasl_plain_password == "s3cret-from-the-vault"
        assert kafka._ssl_context is not None
    assert KafkaConnection().client_options() == {"security_protocol": "PLAINTEXT"}
