"""Error responses in each protocol's own shape.

OpenAI (`/v1/...`): {"error": {"message", "type", "param", "code"}}.
TGI (`/generate`): {"error": "message", "error_type"}, TGI's own shape.
llama.cpp (everything else): {"error": {"code", "message", "type"}}.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 422: "invalid_request_error",
                 501: "invalid_request_error", 503: "server_error", 500: "server_error"}
_LLAMA_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 422: "invalid_request_error",
                501: "not_supported_error", 503: "unavailable_error", 500: "server_error"}
_TGI_TYPES = {401: "authentication", 403: "permission", 404: "not_found", 500: "generation", 501: "not_supported",
              503: "overloaded"}  # anything else is a "validation" error
TGI_PATHS = ("/generate",)


class ApiError(Exception):
    """A request the server answers with an error status and message."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def is_openai_path(path: str) -> bool:
    """Whether a path belongs to the OpenAI protocol (and gets its error shape)."""
    return path.startswith("/v1/")


def error_body(path: str, error: ApiError) -> dict[str, Any]:
    """The JSON error object for `error` in the shape of the protocol `path` belongs to."""
    if is_openai_path(path):
        code = error.code
        if code is None and error.status == 401:
            code = "invalid_api_key"
        return {"error": {"message": error.message, "type": _OPENAI_TYPES.get(error.status, "invalid_request_error"),
                          "param": error.param, "code": code}}
    if path in TGI_PATHS:
        return {"error": error.message, "error_type": _TGI_TYPES.get(error.status, "validation")}
    return {"error": {"code": error.status, "message": error.message,
                      "type": _LLAMA_TYPES.get(error.status, "invalid_request_error")}}


def error_response(path: str, error: ApiError) -> JSONResponse:
    """The HTTP response for `error`."""
    return JSONResponse(error_body(path, error), status_code=error.status, headers=error.headers)
