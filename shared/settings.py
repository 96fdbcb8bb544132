"""Settings shared by every service, read from the environment at start-up.

Each service has one typed settings class (``services/<name>/settings.py``) that subclasses
:class:`CommonSettings` and adds its own fields under its own prefix (``SHOTLINE_INGEST_``,
``SHOTLINE_LOCATOR_``, ``SHOTLINE_DISPATCH_``). The fields here are the same for every
service and so have fixed, unprefixed names: ``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``SHOTLINE_*``.

Nothing is read at import time: call ``SomeSettings()`` in ``main``/``create_app``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class CommonSettings(BaseSettings):
    """Infrastructure every service talks to. Unset broker/database -> embedded defaults."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]. Unset: `shotline run` starts an embedded broker "
        "(in-memory log: everything on it is lost when it stops).",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=_env("DATABASE_URL"),
        description="postgresql://… Unset: start embedded PostgreSQL under SHOTLINE_DATA_DIR.",
    )
    data_dir: Path = Field(
        default=Path(".shotline"),
        validation_alias=_env("SHOTLINE_DATA_DIR"),
        description="Project-local folder for the embedded database's files.",
    )
    detections_topic: str = Field(
        default="shotline.detections",
        validation_alias=_env("SHOTLINE_DETECTIONS_TOPIC"),
        description="Topic of accepted detections, keyed by coverage zone",
    )
    incidents_topic: str = Field(
        default="shotline.incidents",
        validation_alias=_env("SHOTLINE_INCIDENTS_TOPIC"),
        description="Topic of located incident versions, keyed by incident id",
    )
    topic_partitions: int = Field(
        default=6,
        ge=1,
        le=1024,
        validation_alias=_env("SHOTLINE_TOPIC_PARTITIONS"),
        description="Partitions created for each topic at start-up (if the topic is new).",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=2_000,
        le=300_000,
        validation_alias=_env("SHOTLINE_KAFKA_SESSION_TIMEOUT_MS"),
        description="Consumer group session timeout. A group join takes about half of it.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        validation_alias=_env("SHOTLINE_KAFKA_FETCH_MAX_WAIT_MS"),
        description="Longest a consumer's fetch waits at the broker when nothing is new. "
        "Apache Kafka answers as soon as records arrive; the embedded broker may hold the fetch "
        "to this limit (at aiokafka's 500 ms default, records waited 0.1-0.25 s per hop).",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias=_env("SHOTLINE_LOG_LEVEL"),
        description="DEBUG, INFO, WARNING or ERROR; logs are JSON lines on stderr",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql://")
        return value

    @property
    def heartbeat_interval_ms(self) -> int:
        return max(self.kafka_session_timeout_ms // 4, 500)
