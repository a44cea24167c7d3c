"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status codes the
official clients map to their exception classes (401 AuthenticationError, 404 NotFoundError, 422
UnprocessableEntityError, 429 RateLimitError, 402/503 APIStatusError/InternalServerError)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_key() -> OpenAIError:
    return OpenAIError(401, "Incorrect or revoked API key provided.", code="invalid_api_key")


def no_route(reason: str) -> OpenAIError:
    return OpenAIError(503, f"No route of nodes can serve this request now: {reason}", "server_error", "no_route")


async def openai_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return JSONResponse(status_code=exc.status, content=exc.body(), headers=exc.headers)
