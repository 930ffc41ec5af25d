"""One exception tree, raised anywhere and rendered once as the OpenAI error envelope."""

from __future__ import annotations


class APIError(Exception):
    """An error with an HTTP status that clients see as `{"error": {...}}`."""

    status = 500
    type = "server_error"
    code: str | None = None
    # Whether the SDKs should retry; sent as `x-should-retry` when set.
    should_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"
    should_retry = False


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    should_retry = False


class PermissionDenied(APIError):
    status = 403
    type = "invalid_request_error"
    code = "insufficient_permissions"
    should_retry = False


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    should_retry = False


class RequestTimeout(APIError):
    """The request did not arrive in time (or its client went away while sending it)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    should_retry = False


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    should_retry = False


class RateLimited(APIError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamError(APIError):
    """The model engine failed; becomes a `failed` response once a response exists."""

    status = 502
    type = "server_error"
    code = "server_error"


def not_found(kind: str, ident: str, param: str | None = None) -> NotFound:
    """The one wording for unknown, foreign, deleted and expired ids alike."""
    return NotFound(f"{kind} with id '{ident}' not found.", param=param)
