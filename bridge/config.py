"""Configuration: environment variables (``BRIDGE_`` prefix, ``__`` for nesting) and TOML.

Two ways in, on purpose:

* :func:`load_settings` is how a deployed bridge is configured: values given in code first, then
  ``BRIDGE_*`` environment variables (a secret also as ``<NAME>_FILE``, a path to read it from),
  then files in the secrets directory (``BRIDGE_SECRETS_DIR``, one file per variable, named like
  it), then the TOML file given with ``--config``. A missing or invalid value, or a ``BRIDGE_*``
  variable the settings do not know, stops the start with one
  :class:`~bridge.errors.ConfigError` naming the variable.
* ``Settings(...)`` built in code (the tests, ``dev``, the benchmark) reads nothing else: an
  operator's exported ``BRIDGE_*`` variables can never point a local tool at production.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, cast
from urllib.parse import urlsplit

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.cloudflare.bodies import DEFAULT_BASE_URL
from bridge.contract.rules import MAX_WORKFLOW_NAME, name_problem
from bridge.errors import ConfigError

ENV_PREFIX = "BRIDGE_"
#: A secret's variable with this suffix names a file holding the secret (Kubernetes, Docker).
FILE_SUFFIX = "_FILE"
SECRETS_DIR_VARIABLE = ENV_PREFIX + "SECRETS_DIR"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"]
#: Mechanisms that authenticate with a user name and password.
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


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
    #: How long a record may wait to be written (broker down, no leader) before the write
    #: counts as failed and the replica stops; a broker outage shorter than this is ridden out.
    delivery_timeout_ms: int = Field(default=120_000, ge=1000)
    #: How long the broker lets a transaction stay open before aborting it; this also bounds
    #: how long a crashed replica's open transaction can hide results from the next owner's
    #: read-back, so keep it below ``readback_timeout_seconds``.
    transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    #: How long the group waits for a member to rejoin once a rebalance begins. A member rejoins
    #: only after its revocation drain, so this must exceed ``drain_timeout_seconds``: else the
    #: group expels it mid-drain and hands its partitions on while it still writes answers.
    #: (aiokafka's own default is the session timeout.)
    rebalance_timeout_ms: int = Field(default=60_000, ge=1000)
    #: Use the idempotent producer; brokers without InitProducerId (Tansu) need it off.
    idempotent_producer: bool = True
    #: Static group membership (KIP-345): a stable id per replica (the pod name) lets a restart
    #: within the session timeout keep its partitions instead of rebalancing the group.
    group_instance_id: str | None = None
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: OAUTHBEARER: a file holding the token, re-read whenever it changes (a sidecar refreshes it).
    sasl_oauth_token_file: Path | None = None
    #: AWS_MSK_IAM: the region of the MSK cluster (credentials come from the usual AWS chain).
    aws_region: str | None = None
    #: CA bundle that signed the brokers' certificates; the system's CAs when unset.
    ssl_cafile: Path | None = None
    #: Client certificate (PEM) for brokers that require one (mTLS), with its key.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    #: Check that the broker's certificate names the host connected to.
    ssl_check_hostname: bool = True

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        sasl = protocol.startswith("SASL_")
        if sasl and mechanism is None:
            raise ValueError(
                f"BRIDGE_KAFKA__SECURITY_PROTOCOL={protocol} needs BRIDGE_KAFKA__SASL_MECHANISM"
            )
        if mechanism is not None and not sasl:
            raise ValueError(
                f"BRIDGE_KAFKA__SASL_MECHANISM={mechanism} needs BRIDGE_KAFKA__SECURITY_PROTOCOL "
                f"SASL_SSL or SASL_PLAINTEXT, not {protocol}"
            )
        if mechanism in PASSWORD_MECHANISMS and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                f"SASL {mechanism} needs BRIDGE_KAFKA__SASL_USERNAME and "
                "BRIDGE_KAFKA__SASL_PASSWORD (or BRIDGE_KAFKA__SASL_PASSWORD_FILE)"
            )
        if mechanism == "OAUTHBEARER" and self.sasl_oauth_token_file is None:
            raise ValueError("SASL OAUTHBEARER needs BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE")
        if mechanism == "AWS_MSK_IAM" and protocol != "SASL_SSL":
            raise ValueError("AWS_MSK_IAM needs BRIDGE_KAFKA__SECURITY_PROTOCOL=SASL_SSL")
        if mechanism == "AWS_MSK_IAM" and not self.aws_region:
            raise ValueError("AWS_MSK_IAM needs BRIDGE_KAFKA__AWS_REGION")
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not protocol.endswith("SSL") and any(path is not None for path in tls_files):
            raise ValueError(
                f"BRIDGE_KAFKA__SSL_* files are set but BRIDGE_KAFKA__SECURITY_PROTOCOL={protocol} "
                "does not use TLS (SSL or SASL_SSL)"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("BRIDGE_KAFKA__SSL_KEYFILE needs BRIDGE_KAFKA__SSL_CERTFILE")
        return self


class TopicSettings(_Section):
    commands: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["workflows.commands"])
    output: str = "workflows.instances"
    dlq: str = "workflows.commands.dlq"
    #: The group's replicas share the API budget by demand through this compacted topic (one
    #: partition, created when missing); empty: each replica takes its partitions' share.
    budget: str = "workflows.budget"
    #: The instance-state stream's topic (e.g. a compacted one); unset: the output topic.
    states: str | None = None

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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CloudflareSettings(_Section):
    account_id: str = Field(min_length=1)
    api_token: SecretStr
    #: Allow a plain ``http://`` base URL to a host other than loopback (the token then travels
    #: unencrypted). Declared before ``base_url``, whose check reads it.
    allow_insecure_http: bool = False
    base_url: str = DEFAULT_BASE_URL
    #: The workflows commands may address; empty: any. A command for another workflow is
    #: ``rejected`` (rule ``workflow_not_allowed``) before any request is spent.
    workflows: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Requests the token may make per window, for the whole consumer group. Cloudflare allows
    #: 1,200 per 300 s; the default keeps headroom for dashboards and other tools on the token.
    budget_requests: int = Field(default=1_100, ge=1)
    budget_window_seconds: float = Field(default=300.0, gt=0)
    #: Instance creations per second (batch items and restarts count).
    creations_per_second_per_workflow: float = Field(default=100.0, gt=0)
    creations_per_second_per_account: float = Field(default=300.0, gt=0)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=64, ge=1)

    @field_validator("workflows", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("base_url")
    @classmethod
    def _transport_is_safe(cls, value: str, info: ValidationInfo) -> str:
        """TLS for the API, always verified; plain HTTP only to this machine or when allowed."""
        parts = urlsplit(value)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError(f"{value!r} is not an http(s):// URL with a host")
        insecure_allowed = bool(info.data.get("allow_insecure_http", False))
        if parts.scheme == "http" and not _loopback(host) and not insecure_allowed:
            raise ValueError(
                f"BRIDGE_CLOUDFLARE__BASE_URL: {value!r} is plain http:// to {host}, which "
                "would send the API token "
                "unencrypted; use https:// (certificates are always verified), or set "
                "BRIDGE_CLOUDFLARE__ALLOW_INSECURE_HTTP=true to accept it"
            )
        return value


class PipelineSettings(_Section):
    #: Instances (keys) worked on at once; commands for one instance always run in order.
    max_concurrency: int = Field(default=256, ge=1)
    #: Commands consumed but not finished; at this bound the partitions are paused.
    max_pending: int = Field(default=5_000, ge=1)
    #: How long a command may keep failing transiently before it is given up as ``failed``.
    retry_deadline_seconds: float = Field(default=600.0, gt=0)
    backoff_initial_seconds: float = Field(default=0.2, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    #: How long creates, terminates and deletes wait to share one bulk call of their workflow.
    batch_linger_ms: float = Field(default=20.0, ge=0)
    #: Grace period for in-flight work on shutdown and on partition revocation.
    drain_timeout_seconds: float = Field(default=20.0, gt=0)
    commit_interval_seconds: float = Field(default=1.0, gt=0)
    #: Probe interval while the API token is refused (401/403).
    auth_probe_seconds: float = Field(default=30.0, gt=0)
    #: Most output/dead-letter records read back when taking partitions (0 turns it off).
    readback_max_records: int = Field(default=200_000, ge=0)
    #: Longest time one read-back may take, including waiting for a crashed replica's open
    #: transaction to be aborted; what it did not reach is carried out again.
    readback_timeout_seconds: float = Field(default=90.0, gt=0)


class StateSettings(_Section):
    """The instance-state stream: which instances are followed, from where, at what cost."""

    enabled: bool = True
    #: Workflows followed besides those seen in commands (comma-separated).
    workflows: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: The Cloudflare Queue that Event Subscriptions feed; unset: polling is the only source.
    queue_id: str | None = Field(default=None, min_length=1)
    #: The largest fraction of the request budget that state tracking (lists, gets) may use.
    budget_share: float = Field(default=0.1, gt=0, le=1)
    #: One ``get`` per ``complete``/``errored`` instance for its output or error.
    fetch_output: bool = True
    #: Pause between polling sweeps when no queue is configured (the budget share may space
    #: them further).
    poll_interval_seconds: float = Field(default=10.0, gt=0)
    #: Pause between reconciliation sweeps when a queue is configured.
    reconcile_interval_seconds: float = Field(default=300.0, gt=0)
    #: How long queue events are held so that late ones can be put in event-time order.
    reorder_window_seconds: float = Field(default=1.0, ge=0)
    #: How long an ended instance is remembered, so that late duplicates of its events are
    #: recognised; memory holds the live instances and those that ended within this time.
    forget_final_after_seconds: float = Field(default=3600.0, gt=0)
    #: Observations waiting to be published (for a ``get``, mostly) before the sources stop
    #: fetching more: the bound on the stream's memory when the budget cannot keep up.
    max_pending: int = Field(default=10_000, ge=1)

    @field_validator("workflows", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("workflows")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            problem = name_problem(name, what="workflow name", max_length=MAX_WORKFLOW_NAME)
            if problem is not None:
                raise ValueError(problem)
        return value


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
    states: StateSettings = Field(default_factory=StateSettings)
    #: Port of the ``/livez`` and ``/readyz`` endpoint; 0 turns it off.
    health_port: int = Field(default=8080, ge=0, le=65535)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    #: A folder of secret files named like the variables (``BRIDGE_CLOUDFLARE__API_TOKEN``, …),
    #: e.g. a mounted Kubernetes Secret; read by ``load_settings`` only.
    secrets_dir: Path | None = None

    @model_validator(mode="after")
    def _rejoin_after_drain(self) -> Self:
        drain_ms = self.pipeline.drain_timeout_seconds * 1000
        if self.kafka.rebalance_timeout_ms <= drain_ms:
            raise ValueError(
                f"BRIDGE_KAFKA__REBALANCE_TIMEOUT_MS={self.kafka.rebalance_timeout_ms} must exceed "
                f"BRIDGE_PIPELINE__DRAIN_TIMEOUT_SECONDS={self.pipeline.drain_timeout_seconds:g} "
                "(in ms): a replica still draining its revoked partitions would be expelled"
            )
        return self

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


class ToolSettings(BaseSettings):
    """What the operator tools (``send``, ``topics``, ``dlq``) need: the broker and the topics,
    read exactly as ``run`` reads them; other sections are ignored."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        nested_model_default_partial_update=True,
    )

    kafka: KafkaSettings
    topics: TopicSettings = Field(default_factory=TopicSettings)

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


class ApiToolSettings(BaseSettings):
    """What the API tools (``conformance``, ``states subscribe``) need: the ``cloudflare``
    section (and ``states``), read exactly as ``run`` reads them; other sections are ignored."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        nested_model_default_partial_update=True,
    )

    cloudflare: CloudflareSettings
    states: StateSettings = Field(default_factory=StateSettings)

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


AnySettings = TypeVar("AnySettings", bound=BaseSettings)


def _variable(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def environment_variables(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """Every ``BRIDGE_*`` variable the settings read, in declaration order; a secret's
    ``<NAME>_FILE`` follows its ``<NAME>``."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(environment_variables(annotation, f"{prefix}{name.upper()}__"))
        else:
            names.append(prefix + name.upper())
            if _is_secret(annotation):
                names.append(prefix + name.upper() + FILE_SUFFIX)
    return names


def secret_values(model: BaseModel) -> list[str]:
    """Every secret the settings hold, to be redacted from the logs."""
    values: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            values.extend(secret_values(value))
    return values


def secret_variables() -> list[str]:
    """The variables holding secrets (each may also come from ``<NAME>_FILE``)."""
    names = environment_variables()
    return [name for name in names if name + FILE_SUFFIX in names]


def check_variable_names(environ: Mapping[str, str]) -> None:
    """Refuse any ``BRIDGE_*`` variable the settings do not read: a typo would be ignored."""
    known = environment_variables()
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown variable {name}{hint} (see workflows-bridge run --help)")


class _Environment(EnvSettingsSource):
    """The ``BRIDGE_*`` variables, minus the ``*_FILE`` ones (read by :func:`_secret_files`)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        files = {(name + FILE_SUFFIX).lower() for name in secret_variables()}
        return {k: v for k, v in super()._load_env_vars().items() if k.lower() not in files}


def _secret_files(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings values read from the files that ``<SECRET>_FILE`` variables name."""
    values: dict[str, Any] = {}
    for name in secret_variables():
        path = environ.get(name + FILE_SUFFIX)
        if path is None:
            continue
        if name in environ:
            raise ConfigError(f"set {name} or {name}{FILE_SUFFIX}, not both")
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{name}{FILE_SUFFIX}: cannot read {path}: {exc.strerror or exc}"
            ) from None
        if not secret:
            raise ConfigError(f"{name}{FILE_SUFFIX}: {path} is empty")
        *sections, field = name.removeprefix(ENV_PREFIX).lower().split("__")
        target = values
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = secret
    return values


def _read_toml(config_file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(config_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """The deployed configuration: ``overrides``, then ``BRIDGE_*`` variables (and the files
    that ``*_FILE`` variables name), then the secrets directory, then the file.

    Raises :class:`ConfigError` naming every bad or unknown variable.
    """
    return _load(Settings, config_file, overrides)


def load_tool_settings(config_file: Path | None = None, **overrides: Any) -> ToolSettings:
    """The broker and topics, read exactly as :func:`load_settings` reads them."""
    return _load(ToolSettings, config_file, overrides)


def load_api_tool_settings(config_file: Path | None = None, **overrides: Any) -> ApiToolSettings:
    """The Cloudflare account, token and base URL (and the state stream's settings), read
    exactly as :func:`load_settings` does."""
    return _load(ApiToolSettings, config_file, overrides)


def _load(
    model: type[AnySettings], config_file: Path | None, overrides: dict[str, Any]
) -> AnySettings:
    environ = dict(os.environ)
    check_variable_names(environ)
    from_file = _read_toml(config_file) if config_file is not None else {}
    # Start the required sections empty so a missing value is reported by its full name.
    from_file.setdefault("kafka", {})
    from_file.setdefault("cloudflare", {})
    from_secret_files = _secret_files(environ)
    secrets_dir = environ.get(SECRETS_DIR_VARIABLE) or from_file.get("secrets_dir")
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise ConfigError(f"{SECRETS_DIR_VARIABLE}: {secrets_dir} is not a directory")

    def sources(  # noqa: PLR0917 - the signature pydantic-settings calls
        cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: code, the environment, secret files, the secrets directory,
        # then the TOML file.
        chosen: list[PydanticBaseSettingsSource] = [
            init_settings,
            _Environment(settings_cls),
            InitSettingsSource(settings_cls, init_kwargs=from_secret_files),
        ]
        if secrets_dir is not None:
            chosen.append(
                NestedSecretsSettingsSource(
                    file_secret_settings,
                    secrets_dir=secrets_dir,
                    secrets_prefix=ENV_PREFIX,
                    secrets_nested_delimiter="__",
                )
            )
        chosen.append(InitSettingsSource(settings_cls, init_kwargs=from_file))
        return tuple(chosen)

    deployed = cast(
        "type[AnySettings]",
        type("Deployed", (model,), {"settings_customise_sources": classmethod(sources)}),
    )
    try:
        return deployed(**overrides)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            what = "missing" if error["type"] == "missing" else str(error["msg"])
            what = what.removeprefix("Value error, ")
            if ENV_PREFIX in what:  # a rule across fields: its message names them
                problems.append(what)
            else:
                problems.append(f"{_variable(error['loc'])}: {what}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
