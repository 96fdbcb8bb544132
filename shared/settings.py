"""Settings shared by every service, read from the environment at start-up.

Each service has one typed settings class (``services/<name>/settings.py``) that subclasses
:class:`CommonSettings` and adds its own fields under its own prefix (``SHOTLINE_INGEST_``,
``SHOTLINE_LOCATOR_``, ``SHOTLINE_DISPATCH_``). The fields here are the same for every
service and so have fixed, unprefixed names: ``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``SHOTLINE_*``.

Nothing is read at import time: call ``SomeSettings()`` in ``main``/``create_app``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class CommonSettings(BaseSettings):
    """Infrastructure every service talks to. Unset broker/database -> embedded defaults."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]. Unset: `shotline run` and `shotline infra` start an "
        "embedded broker (in-memory log: everything on it is lost when it stops); every other "
        "command joins theirs (SHOTLINE_DATA_DIR/infra.json) or refuses to start.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=_env("DATABASE_URL"),
        description="postgresql://… Unset: the database of a running `shotline run` or "
        "`shotline infra`, else embedded PostgreSQL under SHOTLINE_DATA_DIR.",
    )
    data_dir: Path = Field(
        default=Path(".shotline"),
        validation_alias=_env("SHOTLINE_DATA_DIR"),
        description="Project-local folder: the embedded database (pgdata/), the running "
        "infrastructure (infra.json), `shotline run`'s log (run.log) and admin token "
        "(admin-token).",
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
    kafka_connect_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        validation_alias=_env("SHOTLINE_KAFKA_CONNECT_TIMEOUT_S"),
        description="Longest wait for the broker at start-up, then stop with an error naming it",
    )
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        le=16,
        validation_alias=_env("SHOTLINE_TOPIC_REPLICATION_FACTOR"),
        description="Replicas of each topic created at start-up (if the topic is new); 3 on a "
        "real cluster, so that acks=all survives a broker's loss",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        validation_alias=_env("KAFKA_SECURITY_PROTOCOL"),
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        validation_alias=_env("KAFKA_SSL_CAFILE"),
        description="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); "
        "unset: the system's CAs",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None,
        validation_alias=_env("KAFKA_SSL_CERTFILE"),
        description="PEM client certificate, for brokers that require mutual TLS",
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None,
        validation_alias=_env("KAFKA_SSL_KEYFILE"),
        description="PEM private key of KAFKA_SSL_CERTFILE",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN",
        validation_alias=_env("KAFKA_SASL_MECHANISM"),
        description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)",
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        validation_alias=_env("KAFKA_SASL_USERNAME"),
        description="SASL user name (SASL_PLAINTEXT, SASL_SSL)",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        validation_alias=_env("KAFKA_SASL_PASSWORD"),
        description="SASL password (SASL_PLAINTEXT, SASL_SSL)",
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

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _security_complete(self) -> CommonSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return self

    @property
    def heartbeat_interval_ms(self) -> int:
        return max(self.kafka_session_timeout_ms // 4, 500)

    def kafka_connection(self) -> KafkaConnection:
        """How every Kafka client of this service connects (security) and creates topics."""
        return KafkaConnection(
            security_protocol=self.kafka_security_protocol,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            replication_factor=self.topic_replication_factor,
        )


@dataclass(frozen=True)
class KafkaConnection:
    """Security of the connection to a (real) Kafka cluster, and the replication of the
    topics we create. The default is the embedded broker's: plaintext, one replica."""

    security_protocol: str = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = 1

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options


def env_name(cls: type[BaseSettings], field_name: str) -> str:
    """The environment variable a settings field is read from."""
    field: FieldInfo = cls.model_fields[field_name]
    choices = getattr(field.validation_alias, "choices", None)
    if choices:
        return str(choices[0]).upper()
    return f"{cls.model_config.get('env_prefix', '')}{field_name}".upper()


def settings_class_named(title: str) -> type[BaseSettings] | None:
    """The settings class (CommonSettings or a subclass) whose name is ``title``."""
    pending: list[type[BaseSettings]] = [CommonSettings]
    while pending:
        cls = pending.pop()
        if cls.__name__ == title:
            return cls
        pending.extend(cls.__subclasses__())
    return None
