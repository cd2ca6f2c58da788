"""The errors the emulated API answers with, as one exception carrying status, code and message.

Codes marked "chosen" are the emulator's own pick where production's number is unverified;
clients should branch on the HTTP status and the message slug, not on these numbers.

=====  =====  ==========================================================================
HTTP   code   meaning
=====  =====  ==========================================================================
400    6007   malformed JSON body                                              (chosen)
400    10002  invalid input: instance id, batch size, status body, payload size (chosen)
401    10000  missing or wrong bearer token
403    10000  token revoked (``EmulatorConfig.revoked``)
403    9109   account id not accessible with this token
404    7003   no such route                                                     (chosen)
404    10200  ``workflows.api.error.workflow.not_found``
404    10400  ``workflows.api.error.instance.not_found``
404    10404  ``/step``: no step of that name and type (or no such attempt)       (chosen)
404    11000  queue not found                                                   (chosen)
404    11001  event subscription not found                                      (chosen)
405    7001   method not allowed on this route                                  (chosen)
409*   10405  ``workflows.api.error.instance.already_exists`` (* status configurable)
409    10409  instance not in a state that allows the action                    (chosen)
429    971    global request budget exceeded / blocked                          (chosen)
429    10429  instance creation rate exceeded                                   (chosen)
500    10001  ``workflows.api.error.internal_server``
501    7501   ``not emulated``: a production route or option the emulator lacks  (emulator)
=====  =====  ==========================================================================

501 is the emulator's own answer, never production's: a client that reaches something the
emulator does not implement learns exactly that, instead of a plausible answer that would make a
test pass for the wrong reason.
"""

from __future__ import annotations

INVALID_ID_MESSAGE = "Provided Workflow ID is not valid."
NOT_RESTARTABLE_MESSAGE = "Instance not in a restartable state."


class ApiProblem(Exception):
    """An error answer: HTTP ``status`` with ``errors[0] = {code, message}``."""

    def __init__(
        self, status: int, code: int, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: Seconds for a ``Retry-After`` header, when the answer should carry one.
        self.retry_after = retry_after


def malformed_json() -> ApiProblem:
    return ApiProblem(400, 6007, "Malformed JSON in request body")


def invalid(message: str) -> ApiProblem:
    return ApiProblem(400, 10002, message)


def invalid_instance_id() -> ApiProblem:
    return ApiProblem(400, 10002, INVALID_ID_MESSAGE)


def unauthenticated() -> ApiProblem:
    return ApiProblem(401, 10000, "Authentication error")


def revoked() -> ApiProblem:
    return ApiProblem(403, 10000, "Authentication error")


def foreign_account() -> ApiProblem:
    return ApiProblem(403, 9109, "Unauthorized to access requested resource")


def no_route(path: str) -> ApiProblem:
    return ApiProblem(
        404, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?"
    )


def method_not_allowed() -> ApiProblem:
    return ApiProblem(405, 7001, "Method not allowed")


def not_emulated(what: str) -> ApiProblem:
    return ApiProblem(501, 7501, f"not emulated: {what} is not implemented by the emulator")


def step_not_found(name: str, step_type: str) -> ApiProblem:
    return ApiProblem(404, 10404, f"workflows.api.error.step.not_found: no {step_type} {name!r}")


def workflow_not_found() -> ApiProblem:
    return ApiProblem(404, 10200, "workflows.api.error.workflow.not_found")


def instance_not_found() -> ApiProblem:
    return ApiProblem(404, 10400, "workflows.api.error.instance.not_found")


def queue_not_found() -> ApiProblem:
    return ApiProblem(404, 11000, "Queue not found")


def subscription_not_found() -> ApiProblem:
    return ApiProblem(404, 11001, "Event subscription not found")


def already_exists(status: int) -> ApiProblem:
    return ApiProblem(status, 10405, "workflows.api.error.instance.already_exists")


def not_restartable() -> ApiProblem:
    return ApiProblem(409, 10409, NOT_RESTARTABLE_MESSAGE)


def budget_exceeded(requests: int, window_seconds: float, retry_after: float) -> ApiProblem:
    return ApiProblem(
        429,
        971,
        f"More than {requests} requests per {window_seconds:g} seconds reached. "
        "Please wait and consider throttling your request speed",
        retry_after=retry_after,
    )


def creation_rate_exceeded(scope: str, limit: int, retry_after: float | None) -> ApiProblem:
    return ApiProblem(
        429,
        10429,
        f"workflows.api.error.rate_limited: more than {limit} instance creations per second "
        f"per {scope}",
        retry_after=retry_after,
    )


def internal_error() -> ApiProblem:
    return ApiProblem(500, 10001, "workflows.api.error.internal_server")
