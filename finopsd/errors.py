"""The gateway's error tree; only the error middleware turns it into JSON.

    GatewayError(status, type, param, code)
     ├── BadRequest            400 invalid_request_error
     ├── NotFound              404 not_found_error
     ├── UpstreamError         upstream status kept, or 502 when unreachable
     └── UpstreamTimeout       504 timeout_error
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error a client should see, with its HTTP status and OpenAI error fields."""

    status = 500
    type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class UpstreamError(GatewayError):
    """The provider answered with an error, or could not be reached (502)."""

    status = 502
    type = "upstream_error"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"


def error_type_for_status(status: int) -> str:
    """The OpenAI error type a client expects for an upstream status."""
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "insufficient_quota",
        403: "permission_error",
        404: "not_found_error",
        408: "timeout_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        429: "rate_limit_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")
