"""Errors in the OpenAI API's shape: every 4xx/5xx body is

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

so an OpenAI client raises its usual exception (openai.BadRequestError, AuthenticationError, ...) with
the message, whatever went wrong: a malformed body, a bad value, a missing key or a full queue.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

# status -> the "type" OpenAI gives errors of that status
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A request the server refuses, raised anywhere inside a handler; answered as an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code, self.headers)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def queue_full(retry_after_s: int) -> ApiError:
    return ApiError(
        503, "the server is at capacity: every batch slot is busy and the queue is full; try again shortly",
        code="queue_full", headers={"Retry-After": str(retry_after_s)},
    )
