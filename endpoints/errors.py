"""Domain errors raised anywhere below the HTTP edge.

Adapters, the registry and the service raise :class:`ServingError` (never a web-framework
exception); the HTTP edge turns it into the error shape of ``spec/WIRE.md`` and the playground
consumer into an error partial.
"""
from __future__ import annotations

# Databricks error codes and the HTTP status each one travels with.
STATUS_BY_CODE: dict[str, int] = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "RESOURCE_ALREADY_EXISTS": 409,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class ServingError(Exception):
    """An error a client can act on.

    ``code`` is a Databricks error code; ``status`` defaults to the one that code travels with.
    ``retry_after`` (seconds) is sent as ``Retry-After`` with 429 and 503. ``retryable`` tells
    callers (fallbacks, SQL batches) whether trying again may succeed.
    """

    def __init__(
        self,
        message: str,
        code: str = "INVALID_PARAMETER_VALUE",
        *,
        status: int | None = None,
        retry_after: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status or STATUS_BY_CODE.get(code, 500)
        self.retry_after = retry_after
        self.retryable = retryable if retryable is not None else self.status in (429, 503, 504)

    def __repr__(self) -> str:
        return f"ServingError({self.status}, {self.code}, {self.message!r})"


def invalid(message: str) -> ServingError:
    return ServingError(message, "INVALID_PARAMETER_VALUE")


def not_found(message: str) -> ServingError:
    return ServingError(message, "RESOURCE_DOES_NOT_EXIST")


def rate_limited(message: str, retry_after: int = 1) -> ServingError:
    return ServingError(message, "REQUEST_LIMIT_EXCEEDED", retry_after=max(1, int(retry_after)))


def unavailable(message: str, retry_after: int = 5) -> ServingError:
    return ServingError(message, "TEMPORARILY_UNAVAILABLE", retry_after=max(1, int(retry_after)))
