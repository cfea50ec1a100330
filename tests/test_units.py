"""Pure units: request parsing, the encoder, prompt building, the scripted tokenizer."""

from __future__ import annotations

import json

import pytest

from bailu.appspec import parse_spec
from bailu.calls import AppCall, parse_app_call
from bailu.errors import ConfigError, InvalidParameter
from bailu.events import Finished, TextDelta, Usage
from bailu.models.scripted import tokenize
from bailu.runtimes.agent import build_request
from bailu.server.encoders import DashScopeEncoder


def parse(body: dict, **headers: str) -> AppCall:
    return parse_app_call("app", json.dumps(body).encode(), {k.replace("_", "-"): v for k, v in headers.items()}, "rid")


def test_parse_prompt_call() -> None:
    call = parse({"input": {"prompt": "hi", "session_id": "abc", "memory_id": ""}, "parameters": {"temperature": 0.5, "seed": 3}},
                 x_dashscope_sse="enable", x_dashscope_workspace="llm-x")
    assert call.stream and call.workspace == "llm-x" and call.prompt == "hi"
    assert call.messages is None and call.session_id == "abc" and call.memory_id is None
    assert call.sampling.as_dict() == {"temperature": 0.5, "seed": 3}
    assert not call.incremental_output


def test_parse_messages_append_prompt_and_map_bot() -> None:
    call = parse({"input": {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}], "prompt": "c"}})
    assert call.messages == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]


def test_empty_messages_with_prompt_is_a_prompt_call() -> None:
    assert parse({"input": {"messages": [], "prompt": "x"}}).messages is None


def test_system_message_only_first() -> None:
    with pytest.raises(InvalidParameter, match=r"messages\[1\]"):
        parse({"input": {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "user", "content": "b"}]}})


def test_encoder_incremental_and_cumulative() -> None:
    events = [Usage("m", 5, 1), TextDelta("ab"), Usage("m", 5, 2), TextDelta("cd"), Finished()]
    inc = DashScopeEncoder("r", "s", incremental=True)
    cum = DashScopeEncoder("r", "s", incremental=False)
    inc_frames = [p for p in map(inc.feed, events) if p]
    cum_frames = [p for p in map(cum.feed, events) if p]
    assert [f["output"]["text"] for f in inc_frames] == ["ab", "cd", ""]
    assert [f["output"]["text"] for f in cum_frames] == ["ab", "abcd", "abcd"]
    assert [f["output"]["finish_reason"] for f in inc_frames] == ["null", "null", "stop"]
    assert [f["usage"]["models"][0]["output_tokens"] for f in inc_frames] == [1, 2, 2]
    assert inc.body()["output"] == {"session_id": "s", "finish_reason": "stop", "text": "abcd"}


def test_sse_bytes_are_single_line_frames() -> None:
    enc = DashScopeEncoder("r", "s", incremental=True)
    frame = enc.sse({"output": {"text": "多行\n文本"}}).decode()
    assert frame == 'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"text":"多行\\n文本"}}\n\n'
    err = enc.sse_error(InvalidParameter("bad")).decode()
    assert err.startswith("id:2\nevent:error\n:HTTP_STATUS/400\nstatus:400\ndata:{")


def test_build_request_prompt_variables_and_sampling() -> None:
    spec = parse_spec({"name": "美食", "model": "m", "instructions": "请给出{{city}}的{{ n }}种美食。{{city}}!",
                       "parameters": {"temperature": 0.7, "max_tokens": 100},
                       "variables": [{"name": "n", "default": "三"}]})
    call = parse({"input": {"prompt": "美食推荐", "biz_params": {"user_prompt_params": {"city": "北京"}}}, "parameters": {"temperature": 0.1}})
    req = build_request(spec, call, [{"role": "user", "content": "old"}, {"role": "assistant", "content": "reply"}])
    assert req.messages[0] == {"role": "system", "content": "请给出北京的三种美食。北京!"}
    assert [m["content"] for m in req.messages[1:]] == ["old", "reply", "美食推荐"]
    assert req.temperature == 0.1 and req.max_tokens == 100
    with pytest.raises(InvalidParameter, match='"city"'):
        build_request(spec, parse({"input": {"prompt": "x"}}), [])


def test_spec_rejects_unknown_keys_and_types() -> None:
    with pytest.raises(ConfigError, match="instrctions"):
        parse_spec({"name": "x", "instrctions": "typo"})
    with pytest.raises(ConfigError, match="not supported"):
        parse_spec({"name": "x", "type": "workflow"})
    with pytest.raises(ConfigError, match="temperature"):
        parse_spec({"name": "x", "parameters": {"temperature": 9}})


def test_tokenize_round_trips() -> None:
    text = "从前有座山，Once upon a time!  end"
    assert "".join(tokenize(text)) == text
    assert tokenize("山里") == ["山", "里"]
