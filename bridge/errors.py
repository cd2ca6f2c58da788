"""One error tree for the whole bridge.

Third-party failures (httpx, aiokafka, pydantic) are caught at the module that talks to them and
re-raised as one of these, so the pipeline decides what to do from our types alone::

    BridgeError
    ├── ConfigError                 configuration missing or invalid; the process cannot start
    ├── ContractError               a command record is not a valid command
    ├── ApiError                an API call did not succeed
    │   ├── TransportError      no answer: connect failure, timeout, dropped link  (retriable)
    │   ├── RateLimited         429: request budget or creation rate exceeded      (retriable)
    │   ├── ServerError         5xx, ``success: false`` on 200, unreadable body     (retriable)
    │   ├── AuthError           401/403: the bridge's token is broken, not the command
    │   ├── NotFound            404: unknown workflow or instance
    │   ├── AlreadyExists       create with an id that is already taken
    │   ├── Conflict            409: the instance's status does not allow the action
    │   └── Rejected            any other 4xx: the API refused the input
    ├── KafkaUnavailable        the broker could not be reached or refused a write
    │   └── KafkaRefused        the broker refused our credentials or certificate (or we its)
    └── InternalError           a bug: the bridge failed at something it should always manage
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    #: Whether trying the same thing again later may succeed.
    retriable: bool = False


class ConfigError(BridgeError):
    """The configuration is missing or invalid; the message names the setting."""


class ContractError(BridgeError):
    """A command record could not be decoded or broke a rule of the contract."""

    def __init__(
        self, message: str, *, stage: str, field: str | None = None, rule: str | None = None
    ):
        super().__init__(message)
        #: ``decode`` (bytes/JSON) or ``validate`` (schema and API limits).
        self.stage = stage
        self.field = field
        self.rule = rule


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What the ``Ratelimit`` / ``Ratelimit-Policy`` headers of one response said."""

    remaining: int | None = None
    reset_seconds: float | None = None
    quota: int | None = None
    window_seconds: float | None = None


class ApiError(BridgeError):
    """A Workflows API call that did not produce a result."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        cf_ray: str | None = None,
        retry_after: float | None = None,
        ratelimit: RateLimitInfo | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        #: Cloudflare's numeric ``errors[0].code``, when the body had one.
        self.code = code
        self.cf_ray = cf_ray
        #: Seconds to wait, from ``Retry-After``; only sent once a limit was exceeded.
        self.retry_after = retry_after
        self.ratelimit = ratelimit

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.message!r}, http_status={self.http_status}, code={self.code})"


class TransportError(ApiError):
    """No HTTP answer: connection refused or dropped, or a timeout."""

    retriable = True


class RateLimited(ApiError):
    """HTTP 429. The global limit blocks every call of the token for a while."""

    retriable = True


class ServerError(ApiError):
    """HTTP 5xx, a 200 with ``success: false``, or a body that is not the Cloudflare envelope."""

    retriable = True


class AuthError(ApiError):
    """HTTP 401/403. The token is wrong or lacks permission; no command can succeed."""


class NotFound(ApiError):
    """HTTP 404: the workflow or the instance does not exist."""


class AlreadyExists(ApiError):
    """``create`` with an instance id that is already in use (within retention)."""


class Conflict(ApiError):
    """HTTP 409: the action is not legal in the instance's current status."""


class Rejected(ApiError):
    """Any other 4xx: the API refused the request's input."""


class KafkaUnavailable(BridgeError):
    """The broker could not be reached, or refused to take a record."""

    retriable = True


class KafkaRefused(KafkaUnavailable):
    """Authentication or TLS failed: wrong SASL credentials, an untrusted certificate, a missing
    client certificate. Waiting does not help; the settings must change."""

    retriable = False


class InternalError(BridgeError):
    """A bug: an unexpected exception where the bridge should always succeed."""
