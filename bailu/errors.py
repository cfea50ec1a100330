"""The exception tree. Every failure a client can see is a :class:`BailuError`.

Each class carries the HTTP status and the DashScope ``code``; one handler in
``bailu.server.errors`` renders them as ``{"code", "message", "request_id"}``.
Foreign errors (httpx, SQLAlchemy, …) are mapped to these at the edge of the
provider or store that raised them, never in a route.

Split by who is at fault:

* :class:`RequestError` (4xx): the caller sent something wrong; the message
  names the field.
* :class:`UpstreamError` (5xx): the model service failed or timed out.
* :class:`InternalError` (500): our bug; the message is generic and the
  details go to the log with the request id.
"""

from __future__ import annotations


class BailuError(Exception):
    status: int = 500
    code: str = "InternalError"
    default_message: str = "An internal error has occured, please try again later or contact service support."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def to_body(self, request_id: str) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "request_id": request_id}


# --- the caller's fault (4xx) -------------------------------------------------------------


class RequestError(BailuError):
    status = 400
    code = "InvalidParameter"
    default_message = "Required parameter missing or invalid, please check the request parameters."


class InvalidParameter(RequestError):
    pass


class EmptyInput(RequestError):
    code = "BadRequest.EmptyInput"
    default_message = "Required input parameter missing from request."


class InvalidApiKey(RequestError):
    status = 401
    code = "InvalidApiKey"
    default_message = "Invalid API-key provided."


class AccessDenied(RequestError):
    status = 403
    code = "AccessDenied"
    default_message = "Access denied."


class AppAccessDenied(AccessDenied):
    code = "App.AccessDenied"
    default_message = "App access denied."


class WorkspaceAccessDenied(AccessDenied):
    code = "Workspace.AccessDenied"
    default_message = "Workspace access denied."


class NotFound(RequestError):
    status = 404
    code = "NotFound"
    default_message = "Not found!"


class Conflict(RequestError):
    status = 409
    code = "Conflict"
    default_message = "The object changed while it was being updated: try again."


class Throttling(RequestError):
    status = 429
    code = "Throttling"
    default_message = "Requests throttling triggered."


# --- the upstream model's fault (5xx) -------------------------------------------------------


class UpstreamError(BailuError):
    status = 500
    code = "ModelServiceFailed"
    default_message = "Failed to request model service."


class ModelServiceFailed(UpstreamError):
    pass


class RequestTimeOut(UpstreamError):
    code = "RequestTimeOut"
    default_message = "Request timed out, please try again later."


class ModelUnavailable(UpstreamError):
    status = 503
    code = "ModelUnavailable"
    default_message = "Model is unavailable, please try again later."


class ModelServingError(UpstreamError):
    """The local model's queue is full."""

    status = 503
    code = "ModelServingError"
    default_message = (
        "Too many requests. Your requests are being throttled due to system capacity limits. Please try again later."
    )


# --- ours ------------------------------------------------------------------------------------


class InternalError(BailuError):
    status = 500
    code = "InternalError"


class ConfigError(Exception):
    """A bad configuration file or app spec, reported by the CLI (never over HTTP)."""
