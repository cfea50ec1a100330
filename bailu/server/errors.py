"""One place that renders every error as DashScope JSON ``{code, message, request_id}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bailu import ids
from bailu.errors import BailuError, InternalError, InvalidParameter, NotFound

log = logging.getLogger("bailu.server")


def validation_message(errors: Sequence[Any]) -> str:
    """``name: String should have at least 1 character; top_k: ...`` — each field by its path in
    the body (or the query), with pydantic's own sentence (not a repr of the error objects)."""
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):  # where it came from, not the field
            loc = loc[1:]
        field = ".".join(loc) or "body"
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            field, msg = "body", "not valid JSON"
        parts.append(f"{field}: {msg}")
    return "Required parameter missing or invalid: " + "; ".join(parts) + "."


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = ids.request_id()
    return rid


def as_bailu_error(exc: BaseException, request_id: str) -> BailuError:
    """Ours as they are; anything else is our bug: logged in full, reported generically."""
    if isinstance(exc, BailuError):
        if exc.status >= 500:
            log.warning("request %s: %s %s", request_id, exc.code, exc.message)
        return exc
    log.error("request %s: unexpected error", request_id, exc_info=exc)
    return InternalError()


def error_response(err: BailuError, request_id: str) -> JSONResponse:
    headers = {"x-request-id": request_id}
    if err.status == 429:
        headers["Retry-After"] = "1"
    return JSONResponse(err.to_body(request_id), status_code=err.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BailuError)
    async def _ours(request: Request, exc: BailuError) -> JSONResponse:
        rid = request_id_of(request)
        return error_response(as_bailu_error(exc, rid), rid)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rid = request_id_of(request)
        if exc.status_code == 405:
            err: BailuError = InvalidParameter(f"Request method '{request.method}' is not supported.")
        elif exc.status_code == 404:
            err = NotFound()
        else:
            err = InvalidParameter(str(exc.detail))
        return error_response(err, rid)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        rid = request_id_of(request)
        return error_response(InvalidParameter(validation_message(exc.errors())), rid)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id_of(request)
        return error_response(as_bailu_error(exc, rid), rid)
