"""One exception hierarchy for the service and one table from exception to HTTP status.

Nothing here knows the web framework: the engine raises these, the API layer renders them as
`{"error": {"type": ..., "message": ...}}` with the status from `STATUS_OF`.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service answers with; `type` is the machine-readable error type."""

    type = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServiceError):
    type = "invalid_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class MethodNotAllowed(ServiceError):
    type = "method_not_allowed"


class UnsupportedMediaType(ServiceError):
    type = "unsupported_media_type"


class BadRequest(ServiceError):
    """A request HTTP itself calls malformed (a header that must appear once appears twice)."""

    type = "bad_request"


class BodyTooLarge(ServiceError):
    type = "body_too_large"


class BodyTimeout(ServiceError):
    type = "body_timeout"


class Unauthorized(ServiceError):
    type = "unauthorized"


class Forbidden(ServiceError):
    type = "forbidden"


class ModelNotFound(ServiceError):
    type = "model_not_found"


class QueueFull(ServiceError):
    type = "queue_full"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    type = "not_ready"


class Draining(ServiceError):
    type = "draining"


class DeadlineExceeded(ServiceError):
    type = "deadline_exceeded"


class ClientDisconnected(ServiceError):
    type = "client_disconnected"


class InferenceFailed(ServiceError):
    type = "inference_failed"


class ModelLoadError(ServiceError):
    """A model version was refused at load time; `reason` is a short label for metrics."""

    type = "model_load_error"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Most specific class first; `status_of` walks the MRO so subclasses inherit their parent's status.
STATUS_OF: dict[type[ServiceError], int] = {
    InvalidRequest: 422,
    MethodNotAllowed: 405,
    UnsupportedMediaType: 415,
    BadRequest: 400,
    BodyTooLarge: 413,
    BodyTimeout: 408,
    Unauthorized: 401,
    Forbidden: 403,
    ModelNotFound: 404,
    QueueFull: 429,
    NotReady: 503,
    Draining: 503,
    DeadlineExceeded: 504,
    # Nobody reads this answer (the client is gone); 499 is nginx's name for it, used in logs and metrics.
    ClientDisconnected: 499,
    InferenceFailed: 500,
    ModelLoadError: 500,
    ServiceError: 500,
}

# The rejection-reason label (metrics) of the errors that refuse a request.
REJECTION_REASON_OF: dict[type[ServiceError], str] = {
    QueueFull: "queue_full",
    DeadlineExceeded: "deadline",
    Draining: "draining",
    NotReady: "not_ready",
    BodyTooLarge: "body_too_large",
    BodyTimeout: "body_timeout",
    BadRequest: "bad_request",
    MethodNotAllowed: "method_not_allowed",
    UnsupportedMediaType: "unsupported_media_type",
    InvalidRequest: "invalid_request",
    Unauthorized: "unauthorized",
    Forbidden: "forbidden",
    ClientDisconnected: "client_disconnected",
}


def status_of(error: ServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]  # type: ignore[index]
    return 500


def rejection_reason(error: ServiceError) -> str | None:
    for cls in type(error).__mro__:
        if cls in REJECTION_REASON_OF:
            return REJECTION_REASON_OF[cls]  # type: ignore[index]
    return None


def error_body(error_type: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": error_type, "message": message}}
