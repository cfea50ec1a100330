"""The agent runtime for plain chat apps.

``build_request`` is pure (prompt variables, history, sampling) and is tested
without a server; ``run_agent`` streams one model invocation as events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from bailu.appspec import VARIABLE, AppSpec
from bailu.calls import AppCall, Message
from bailu.errors import InvalidParameter
from bailu.events import Event, Finished, TextDelta, Usage
from bailu.models import ChatModel, ChatRequest


def render_instructions(spec: AppSpec, values: dict[str, Any]) -> str:
    """Fill ``{{var}}`` from the call's ``user_prompt_params``, else the spec's defaults."""
    defaults = {v.name: v.default for v in spec.variables if v.default is not None}
    missing = [n for n in spec.prompt_variables() if n not in values and n not in defaults]
    if missing:
        names = ", ".join(f'"{n}"' for n in missing)
        raise InvalidParameter(
            f"Prompt variable {names} of this app is missing: pass it in input.biz_params.user_prompt_params."
        )

    def fill(m: Any) -> str:
        value = values.get(m.group(1), defaults.get(m.group(1)))
        return value if isinstance(value, str) else _text(value)

    return VARIABLE.sub(fill, spec.instructions)


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def build_request(spec: AppSpec, call: AppCall, history: list[Message], context: str | None = None) -> ChatRequest:
    """The model request for one turn.

    With caller-managed ``messages`` the stored history is not used; a caller's
    own system message is appended to the app's instructions (the app's come first).
    """
    system = render_instructions(spec, call.prompt_params)
    if call.messages is not None:
        turns = list(call.messages)
        if turns and turns[0]["role"] == "system":
            caller_system = turns.pop(0)["content"]
            system = f"{system}\n\n{caller_system}" if system else caller_system
    else:
        turns = [*history, {"role": "user", "content": call.prompt or ""}]
    if context:
        system = f"{system}\n\n{context}" if system else context
    messages = ([{"role": "system", "content": system}] if system else []) + turns
    params = spec.parameters.model_dump(exclude_none=True)
    params.update(call.sampling.as_dict())
    return ChatRequest(messages=messages, **params)


async def run_agent(spec: AppSpec, request: ChatRequest, model: ChatModel) -> AsyncIterator[Event]:
    finish = "stop"
    async for chunk in model.stream(request):
        if chunk.usage is not None:
            yield Usage(spec.model, chunk.usage.input_tokens, chunk.usage.output_tokens)
        if chunk.text:
            yield TextDelta(chunk.text)
        if chunk.finish_reason:
            finish = chunk.finish_reason
    yield Finished(finish)
