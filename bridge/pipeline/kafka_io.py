"""The Kafka edge: client settings (security included), and aiokafka's errors mapped into the
bridge's tree.

Every client the bridge or its tools open — consumer, producer, admin — gets its connection and
security options from :func:`client_options`, so ``run``, ``send``, ``check``, ``topics`` and
``dlq`` reach a managed cluster the same way: TLS with a CA bundle and an optional client
certificate, SASL PLAIN / SCRAM over TLS or plaintext, OAUTHBEARER with a token read from a file
(re-read when it changes), and AWS MSK IAM through the ``msk`` extra.

aiokafka says why a connection failed only in a log line ("Unable connect to …") and raises a
bare "Unable to bootstrap"; :func:`explained` keeps those lines while clients start and turns
the failure into one :class:`~bridge.errors.KafkaUnavailable` (or
:class:`~bridge.errors.KafkaRefused`) sentence that says what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bridge.config import KafkaSettings, Settings
from bridge.errors import ConfigError, KafkaRefused, KafkaUnavailable
from bridge.logs import register_secret
from bridge.pipeline.translate import OutRecord

#: What the bridge calls the MSK IAM mechanism; on the wire it is OAUTHBEARER with a signed URL.
MSK_IAM = "AWS_MSK_IAM"
#: Refresh an MSK IAM token this long before it expires.
_MSK_REFRESH_MARGIN = 60.0


# -- security -----------------------------------------------------------------------------------


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, from the CA bundle and optional client certificate.

    A file that cannot be loaded is a :class:`ConfigError` naming its variable.
    """
    if not kafka.security_protocol.endswith("SSL"):
        return None
    try:
        context = ssl.create_default_context(
            cafile=None if kafka.ssl_cafile is None else str(kafka.ssl_cafile)
        )
    except (OSError, ssl.SSLError) as exc:
        problem = _file_problem("BRIDGE_KAFKA__SSL_CAFILE", kafka.ssl_cafile, exc)
        raise ConfigError(problem) from None
    if kafka.ssl_certfile is not None:
        password = kafka.ssl_key_password
        try:
            context.load_cert_chain(
                str(kafka.ssl_certfile),
                None if kafka.ssl_keyfile is None else str(kafka.ssl_keyfile),
                None if password is None else password.get_secret_value(),
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                _file_problem(
                    "BRIDGE_KAFKA__SSL_CERTFILE / BRIDGE_KAFKA__SSL_KEYFILE "
                    "(or BRIDGE_KAFKA__SSL_KEY_PASSWORD)",
                    kafka.ssl_certfile,
                    exc,
                )
            ) from None
    # Off only on request: without it any certificate from a trusted CA would do for any host.
    context.check_hostname = kafka.ssl_check_hostname
    return context


def _file_problem(variable: str, path: Path | None, exc: Exception) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{variable}: cannot load {path}: {reason}"


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER token from a file, re-read whenever the file changes (size or mtime).

    A sidecar or the platform (a projected service-account token) refreshes the file; every new
    connection then presents the current token. The token is redacted from the logs.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[int, int] | None = None
        self._token = ""

    async def token(self) -> str:
        return self.current()

    def current(self) -> str:
        try:
            stat = self._path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                text = self._path.read_text(encoding="utf-8").strip()
                if not text:
                    raise KafkaRefused(f"BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE {self._path} is empty")
                register_secret(text)
                self._token, self._seen = text, seen
        except OSError as exc:
            raise KafkaRefused(
                f"BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE: cannot read {self._path}: {exc.strerror}"
            ) from None
        return self._token


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """AWS MSK IAM as OAUTHBEARER: a SigV4-signed token from AWS's own signer library
    (``aws-msk-iam-sasl-signer-python``, the ``msk`` extra), refreshed before it expires."""

    def __init__(self, region: str) -> None:
        try:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider  # noqa: PLC0415
        except ImportError:
            raise ConfigError(
                "BRIDGE_KAFKA__SASL_MECHANISM=AWS_MSK_IAM needs the 'msk' extra: "
                "pip install 'workflows-bridge[msk]'"
            ) from None
        self._generate: Callable[[str], tuple[str, int]] = MSKAuthTokenProvider.generate_auth_token
        self._region = region
        self._token = ""
        self._expires = 0.0

    async def token(self) -> str:
        if time.time() >= self._expires - _MSK_REFRESH_MARGIN:
            token, expiry_ms = await asyncio.to_thread(self._generate, self._region)
            register_secret(token)
            self._token, self._expires = token, expiry_ms / 1000
        return self._token


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection and security options every aiokafka client of the bridge and its tools takes."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    mechanism = kafka.sasl_mechanism
    if mechanism is None:
        return options
    if mechanism == MSK_IAM:
        assert kafka.aws_region is not None  # the settings require it
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = MskIamTokenProvider(kafka.aws_region)
    elif mechanism == "OAUTHBEARER":
        assert kafka.sasl_oauth_token_file is not None  # the settings require it
        options["sasl_mechanism"] = mechanism
        options["sasl_oauth_token_provider"] = FileTokenProvider(kafka.sasl_oauth_token_file)
    else:
        options["sasl_mechanism"] = mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


# -- why a connection failed --------------------------------------------------------------------


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Unable connect to"):
            self.reasons.append(message)


@contextlib.contextmanager
def explained(kafka: KafkaSettings, what: str) -> Iterator[None]:
    """Turn an aiokafka failure inside the block into one clear :class:`KafkaUnavailable`."""
    collector = _Collector()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(collector)
    try:
        yield
    except KafkaError as exc:
        raise explain(kafka, what, exc, collector.reasons) from exc
    finally:
        logger.removeHandler(collector)


def explain(
    kafka: KafkaSettings, what: str, exc: BaseException, reasons: list[str]
) -> KafkaUnavailable:
    """The error to report for ``exc``, using what aiokafka logged about the connection."""
    detail = reasons[-1] if reasons else str(exc) or type(exc).__name__
    where = f"{what} ({kafka.security_protocol} to {kafka.bootstrap_servers})"
    if "SaslAuthenticationFailed" in detail or "Authentication failed" in detail:
        return KafkaRefused(
            f"{where}: the broker refused the SASL credentials "
            f"({kafka.sasl_mechanism}, user {kafka.sasl_username!r}); check "
            "BRIDGE_KAFKA__SASL_USERNAME and BRIDGE_KAFKA__SASL_PASSWORD"
        )
    if "UnsupportedSaslMechanism" in detail:
        return KafkaRefused(
            f"{where}: the broker does not offer SASL {kafka.sasl_mechanism} on this listener"
        )
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        reason = detail.split("certificate verify failed:", 1)[-1].split("(_ssl")[0].strip()
        hint = (
            "set BRIDGE_KAFKA__SSL_CAFILE to the CA that signed it"
            if "mismatch" not in reason
            else "connect by a name the certificate holds (BRIDGE_KAFKA__SSL_CHECK_HOSTNAME)"
        )
        return KafkaRefused(f"{where}: the broker's certificate is not trusted ({reason}); {hint}")
    if kafka.security_protocol == "SSL" and "closed" in detail:
        return KafkaRefused(
            f"{where}: the broker closed the connection during the TLS handshake; it may require "
            "a client certificate signed by a CA it trusts (BRIDGE_KAFKA__SSL_CERTFILE, "
            "BRIDGE_KAFKA__SSL_KEYFILE)"
        )
    if isinstance(exc, KafkaRefused):
        return exc
    return KafkaUnavailable(f"{where}: {detail}")


# -- clients ------------------------------------------------------------------------------------


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group member with manual commits: offsets move only past answered commands."""
    kafka = settings.kafka
    return AIOKafkaConsumer(
        group_id=kafka.group_id,
        group_instance_id=kafka.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if kafka.transactional_id else "read_uncommitted",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        rebalance_timeout_ms=kafka.rebalance_timeout_ms,
        **client_options(kafka),
    )


def membership_lost(consumer: AIOKafkaConsumer) -> bool:
    """Whether the group moved on without this member (its session expired while it could not
    reach the coordinator): the partitions being revoked are already someone else's.

    aiokafka has no ``on_partitions_lost``; in that case it resets the member id before it
    calls the revocation listener, which is what this reads.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    return coordinator is not None and getattr(coordinator, "member_id", None) == ""


def make_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer outside the group, for reading back what was already written."""
    kafka = settings.kafka
    return AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        auto_offset_reset="earliest",
        # Transactional results count once their transaction committed: an aborted one's
        # results were never seen, so their commands must be answered again.
        isolation_level="read_committed" if kafka.transactional_id else "read_uncommitted",
        **{**client_options(kafka), "client_id": f"{kafka.client_id}-readback"},
    )


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client: committed offsets with their metadata, topic descriptions."""
    kafka = settings.kafka
    return AIOKafkaAdminClient(**{**client_options(kafka), "client_id": f"{kafka.client_id}-admin"})


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """``acks=all``; idempotent where the broker supports it; transactional when configured."""
    kafka = settings.kafka
    options: dict[str, Any] = {}
    if kafka.transactional_id:
        options["transactional_id"] = kafka.transactional_id
        options["transaction_timeout_ms"] = kafka.transaction_timeout_ms
        options["enable_idempotence"] = True
    elif kafka.idempotent_producer:
        options["enable_idempotence"] = True
    return AIOKafkaProducer(
        acks="all",
        linger_ms=5,
        # Results are small and many: a 16 KiB batch per partition (the default) fills at once
        # and makes every worker wait for it to drain.
        max_batch_size=256 * 1024,
        max_request_size=2 * 1024 * 1024,
        # aiokafka fails a record whose partition has had no leader for this long (and gives a
        # produce request this long): a broker outage shorter than it is waited out.
        request_timeout_ms=kafka.delivery_timeout_ms,
        **options,
        **client_options(kafka),
    )


async def send(producer: AIOKafkaProducer, topic: str, record: OutRecord) -> asyncio.Future[Any]:
    """Queue ``record``; the returned future resolves once the broker has it."""
    value = record.value
    if value is None and record.key is None:
        # aiokafka cannot write a record without key and value (other clients can, so such a
        # command may arrive and be dead-lettered); an empty value stands in for it.
        value = b""
    try:
        future: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=record.key, headers=list(record.headers)
        )
    except KafkaError as exc:
        raise KafkaUnavailable(f"could not write to {topic}: {exc}") from exc
    return future


async def acknowledged(futures: list[asyncio.Future[Any]]) -> None:
    """Wait until every queued record is on the broker; raise :class:`KafkaUnavailable` if not."""
    try:
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise KafkaUnavailable(f"the broker did not take a record: {exc}") from exc
