"""The typed core of a request: :class:`AppCall`, parsed and validated from the wire.

Protocols translate HTTP into an ``AppCall``; runtimes never see raw JSON. Every
rejection names the field that was wrong (docs/errors.md lists them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bailu.errors import AccessDenied, EmptyInput, InvalidParameter, RequestError

Message = dict[str, str]

_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "bot": "assistant"}
_SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


@dataclass
class Sampling:
    """Per-call sampling overrides (``parameters.temperature`` …); ``None`` = the app's value."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class RagOptions:
    """``parameters.rag_options`` (WIRE.md §3.3), validated."""

    pipeline_ids: list[str] | None = None  # only the first 5 take effect
    file_ids: list[str] | None = None
    tags: list[str] | None = None
    metadata_filter: dict[str, Any] | None = None
    structured_filter: dict[str, Any] | None = None


@dataclass
class AppCall:
    app_id: str
    request_id: str
    workspace: str | None = None
    stream: bool = False
    incremental_output: bool = False
    has_thoughts: bool = False
    prompt: str | None = None
    #: caller-managed history, with ``prompt`` already appended; None = server sessions
    messages: list[Message] | None = None
    session_id: str | None = None
    memory_id: str | None = None
    biz_params: dict[str, Any] = field(default_factory=dict)
    sampling: Sampling = field(default_factory=Sampling)
    rag: RagOptions = field(default_factory=RagOptions)
    parameters: dict[str, Any] = field(default_factory=dict)  # everything, verbatim, for later capabilities
    client: str = ""  # user agent / sdk client, informational

    @property
    def prompt_params(self) -> dict[str, Any]:
        value = self.biz_params.get("user_prompt_params") or {}
        if not isinstance(value, dict):
            raise InvalidParameter("input.biz_params.user_prompt_params must be a JSON object.")
        return value


def parse_app_call(app_id: str, body: bytes, headers: dict[str, str], request_id: str) -> AppCall:
    """Parse and validate ``POST /api/v1/apps/{app_id}/completion``. ``headers`` are lower-cased."""
    if headers.get("x-dashscope-async", "").lower() == "enable":
        raise AccessDenied("Current user api does not support asynchronous calls.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidParameter("Required body invalid, please check the request body format.") from None
    if not isinstance(data, dict):
        raise InvalidParameter("Required body invalid, please check the request body format.")
    inp = data.get("input")
    if inp is None:
        raise EmptyInput()
    if not isinstance(inp, dict):
        raise RequestError("The input parameter requires json format.", code="BadRequest.IllegalInput")
    params = data.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParameter("Required parameter(parameters) must be a JSON object.")

    call = AppCall(
        app_id=app_id,
        request_id=request_id,
        workspace=headers.get("x-dashscope-workspace") or None,
        stream=headers.get("x-dashscope-sse", "").lower() == "enable",
        incremental_output=_flag(params, "incremental_output"),
        has_thoughts=_flag(params, "has_thoughts"),
        parameters=params,
        client=headers.get("x-dashscope-sdk-client") or headers.get("user-agent", ""),
    )

    prompt = inp.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidParameter("input content must be a string. (input.prompt)")
    call.prompt = prompt or None

    messages = _messages(inp)
    if messages is None and not call.prompt:
        raise InvalidParameter('Either "prompt" or "messages" must exist and cannot both be none')
    if messages is not None:
        if call.prompt:
            messages.append({"role": "user", "content": call.prompt})
        if not any(m["role"] == "user" for m in messages):
            raise InvalidParameter("The input messages do not contain elements with the role of user.")
        if messages[-1]["role"] != "user":
            raise InvalidParameter("The last message in input.messages must have the role of user.")
        call.messages = messages

    session_id = inp.get("session_id")
    if session_id not in (None, ""):
        if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
            raise InvalidParameter(
                "Required parameter(input.session_id) invalid: 1-128 characters of letters, digits, '-' or '_'."
            )
        call.session_id = session_id
    memory_id = inp.get("memory_id")
    if memory_id not in (None, ""):
        if not isinstance(memory_id, str):
            raise InvalidParameter("Required parameter(input.memory_id) must be a string.")
        call.memory_id = memory_id
    biz = inp.get("biz_params")
    if biz is not None:
        if not isinstance(biz, dict):
            raise InvalidParameter("Required parameter(input.biz_params) must be a JSON object.")
        call.biz_params = biz
    call.sampling = _sampling(params)
    call.rag = _rag_options(params.get("rag_options"))
    return call


def _strings(value: Any, name: str, limit: int | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"Required parameter(parameters.rag_options.{name}) must be an array of strings.")
    if limit is not None and len(value) > limit:
        raise InvalidParameter(f"parameters.rag_options.{name} takes at most {limit} ids, got {len(value)}.")
    return value


def _rag_options(raw: Any) -> RagOptions:
    if raw is None:
        return RagOptions()
    if not isinstance(raw, dict):
        raise InvalidParameter("Required parameter(parameters.rag_options) must be a JSON object.")
    rag = RagOptions()
    if raw.get("pipeline_ids") is not None:
        rag.pipeline_ids = _strings(raw["pipeline_ids"], "pipeline_ids")[:5]
    if raw.get("file_ids") is not None:
        rag.file_ids = _strings(raw["file_ids"], "file_ids", 100)
    tags = raw.get("tags")
    if tags is not None:  # one official sample sends a bare string
        rag.tags = [tags] if isinstance(tags, str) else _strings(tags, "tags")
    for name in ("metadata_filter", "structured_filter"):
        value = raw.get(name)
        if value is not None:
            if not isinstance(value, dict):
                raise InvalidParameter(f"Required parameter(parameters.rag_options.{name}) must be a JSON object.")
            setattr(rag, name, value)
    return rag


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise InvalidParameter(f"Required parameter(parameters.{name}) must be a boolean.")


def _messages(inp: dict[str, Any]) -> list[Message] | None:
    raw = inp.get("messages")
    if raw is None:
        history = inp.get("history")  # deprecated [{"user":…, "bot":…}]
        if not history:
            return None
        return _legacy_history(history)
    if not isinstance(raw, list):
        raise InvalidParameter("Required parameter(input.messages) must be an array of {role, content} objects.")
    if not raw:
        if inp.get("prompt"):
            return None
        raise InvalidParameter("[] is too short")
    out: list[Message] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidParameter(f"input.messages[{i}] must be an object with role and content.")
        role = _ROLES.get(m.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise InvalidParameter(
                f"input.messages[{i}].role must be one of system, user, assistant; got {m.get('role')!r}."
            )
        content = m.get("content")
        if content is None:
            raise InvalidParameter(f"The content field is a required field. (input.messages[{i}])")
        if not isinstance(content, str):
            raise InvalidParameter(f"input content must be a string. (input.messages[{i}].content)")
        if role == "system" and i != 0:
            raise InvalidParameter(f"input.messages[{i}]: a system message may only come first.")
        out.append({"role": role, "content": content})
    return out


def _legacy_history(history: Any) -> list[Message]:
    if not isinstance(history, list):
        raise InvalidParameter("Required parameter(input.history) must be an array of {user, bot} objects.")
    out: list[Message] = []
    for i, h in enumerate(history):
        if not isinstance(h, dict) or not isinstance(h.get("user", ""), str) or not isinstance(h.get("bot", ""), str):
            raise InvalidParameter(f"input.history[{i}] must be an object with string user and bot.")
        if h.get("user"):
            out.append({"role": "user", "content": h["user"]})
        if h.get("bot"):
            out.append({"role": "assistant", "content": h["bot"]})
    return out


def _number(params: dict[str, Any], name: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    value = params.get(name)
    if value is None:
        return None
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise InvalidParameter(f"Required parameter(parameters.{name}) must be {kind} in [{lo}, {hi}], got {value!r}.")
    return value


def _sampling(params: dict[str, Any]) -> Sampling:
    s = Sampling(
        temperature=_number(params, "temperature", 0.0, 2.0),
        top_p=_number(params, "top_p", 0.0, 1.0),
        top_k=_number(params, "top_k", 0, 1_000_000, integer=True),
        seed=_number(params, "seed", 0, 2**63 - 1, integer=True),
    )
    if s.top_p is not None and s.top_p == 0:
        raise InvalidParameter("Required parameter(parameters.top_p) must be in (0, 1], got 0.")
    return s
