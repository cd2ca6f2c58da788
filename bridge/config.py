"""Configuration: environment variables (``BRIDGE_`` prefix, ``__`` for nesting) and TOML.

Two ways in, on purpose:

* :func:`load_settings` is how a deployed bridge is configured: values given in code first, then
  ``BRIDGE_*`` environment variables, then the TOML file given with ``--config``. A missing or
  invalid value stops the start with one :class:`~bridge.errors.ConfigError` naming the variable.
* ``Settings(...)`` built in code (the tests, ``dev``, the benchmark) reads nothing else: an
  operator's exported ``BRIDGE_*`` variables can never point a local tool at production.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.cloudflare.bodies import DEFAULT_BASE_URL
from bridge.errors import ConfigError

ENV_PREFIX = "BRIDGE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(description="host:port[,host:port…] of the Kafka cluster.")
    group_id: str = "workflows-bridge"
    client_id: str = "workflows-bridge"
    #: Set to write results and consumed offsets in one Kafka transaction (exactly-once results).
    transactional_id: str | None = None
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    #: Use the idempotent producer; brokers without InitProducerId (Tansu) need it off.
    idempotent_producer: bool = True
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class TopicSettings(_Section):
    commands: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["workflows.commands"])
    output: str = "workflows.instances"
    dlq: str = "workflows.commands.dlq"

    @field_validator("commands", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("commands")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one command topic")
        return value


class CloudflareSettings(_Section):
    account_id: str = Field(min_length=1)
    api_token: SecretStr
    base_url: str = DEFAULT_BASE_URL
    #: Requests the token may make per window, for the whole consumer group. Cloudflare allows
    #: 1,200 per 300 s; the default keeps headroom for dashboards and other tools on the token.
    budget_requests: int = Field(default=1_100, ge=1)
    budget_window_seconds: float = Field(default=300.0, gt=0)
    #: Instance creations per second (batch items and restarts count).
    creations_per_second_per_workflow: float = Field(default=100.0, gt=0)
    creations_per_second_per_account: float = Field(default=300.0, gt=0)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=64, ge=1)


class PipelineSettings(_Section):
    #: Instances (keys) worked on at once; commands for one instance always run in order.
    max_concurrency: int = Field(default=256, ge=1)
    #: Commands consumed but not finished; at this bound the partitions are paused.
    max_pending: int = Field(default=5_000, ge=1)
    #: How long a command may keep failing transiently before it is given up as ``failed``.
    retry_deadline_seconds: float = Field(default=600.0, gt=0)
    backoff_initial_seconds: float = Field(default=0.2, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    #: How long single creates wait to be coalesced into one ``/batch`` call.
    batch_linger_ms: float = Field(default=20.0, ge=0)
    #: Grace period for in-flight work on shutdown and on partition revocation.
    drain_timeout_seconds: float = Field(default=20.0, gt=0)
    commit_interval_seconds: float = Field(default=1.0, gt=0)
    #: Probe interval while the API token is refused (401/403).
    auth_probe_seconds: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    """Everything ``workflows-bridge run`` needs; built in code, it reads only what it is given."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    kafka: KafkaSettings
    topics: TopicSettings = Field(default_factory=TopicSettings)
    cloudflare: CloudflareSettings
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    #: Port of the ``/livez`` and ``/readyz`` endpoint; 0 turns it off.
    health_port: int = Field(default=8080, ge=0, le=65535)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _variable(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def environment_variables(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """Every ``BRIDGE_*`` variable the settings read, in declaration order."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(environment_variables(annotation, f"{prefix}{name.upper()}__"))
        else:
            names.append(prefix + name.upper())
    return names


def _read_toml(config_file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(config_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """The deployed configuration: ``overrides``, then ``BRIDGE_*`` variables, then the file.

    Raises :class:`ConfigError` naming every bad variable.
    """
    from_file = _read_toml(config_file) if config_file is not None else {}
    # Start the required sections empty so a missing value is reported by its full name.
    from_file.setdefault("kafka", {})
    from_file.setdefault("cloudflare", {})

    class Deployed(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # Earlier sources win: code, then the environment, then the file.
            file_source = InitSettingsSource(settings_cls, init_kwargs=from_file)
            return (init_settings, env_settings, file_source)

    try:
        return Deployed(**overrides)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            what = "missing" if error["type"] == "missing" else str(error["msg"])
            problems.append(f"{_variable(error['loc'])}: {what}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
