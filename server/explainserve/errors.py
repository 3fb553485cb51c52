"""Errors that carry the gRPC status they end a call with.

Every layer below the servicer raises these (never a proto or a grpc object); the servicer maps
them to a status in one place. Anything else that escapes is a bug and becomes INTERNAL.
"""

from __future__ import annotations

# A status message travels in the trailers, and gRPC clients refuse metadata over 16 KB by
# default (the call then ends RESOURCE_EXHAUSTED, which clients retry): echoed values are cut.
MAX_MESSAGE_CHARS = 4000
MAX_ECHOED_NAME_CHARS = 200


class ServiceError(Exception):
    """Base class: `status` is the name of a grpc.StatusCode member."""

    status = "INTERNAL"

    def __init__(self, message: str, *, retry_after_ms: int | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message)} characters in all)"
        super().__init__(message)
        self.message = message
        self.retry_after_ms = retry_after_ms


def echo(name: str) -> str:
    """`name` quoted for a message, cut to MAX_ECHOED_NAME_CHARS."""
    if len(name) <= MAX_ECHOED_NAME_CHARS:
        return repr(name)
    return repr(name[:MAX_ECHOED_NAME_CHARS]) + f"... ({len(name)} characters)"


class InvalidArgument(ServiceError):
    status = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    status = "NOT_FOUND"


class OutOfRange(ServiceError):
    status = "OUT_OF_RANGE"


class FailedPrecondition(ServiceError):
    status = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    status = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    status = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    status = "CANCELLED"


def not_found(kind: str, name: str, valid: list[str] | tuple[str, ...], where: str = "") -> NotFound:
    """A NotFound that names the bad value and lists the valid ones (shortened if many)."""
    shown = list(valid)[:40]
    more = f" and {len(valid) - len(shown)} more" if len(valid) > len(shown) else ""
    return NotFound(f"unknown {kind} {echo(name)}{where}; valid: {', '.join(shown)}{more}")
