"""The legacy `dashscope.Application.call` surface against a real server (WIRE.md §3, §6, §7)."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from dashscope import Application

from bailu.models.scripted import tokenize
from tests.conftest import BailuServer


pytestmark = pytest.mark.usefixtures("legacy_sdk")


@pytest.fixture(scope="module")
def story_app(server: BailuServer) -> str:
    return server.app(model="story", instructions="You are a storyteller.")


STORY = "从前有座山，山里有座庙。Once upon a time there was a mountain."


def test_non_stream_call(server: BailuServer, story_app: str) -> None:
    resp = Application.call(app_id=story_app, prompt="你是谁?", api_key=server.key)
    assert resp.status_code == HTTPStatus.OK
    assert resp.output.text == STORY
    assert resp.output.finish_reason == "stop"
    assert len(resp.output.session_id) == 32
    assert resp.request_id
    (model,) = resp.usage.models
    assert model.model_id == "story"
    assert isinstance(model.input_tokens, int) and model.input_tokens > 0
    assert model.output_tokens == len(tokenize(STORY))


def test_stream_incremental_deltas_concatenate(server: BailuServer, story_app: str) -> None:
    frames = list(Application.call(app_id=story_app, prompt="hi", api_key=server.key, stream=True, incremental_output=True))
    assert all(f.status_code == HTTPStatus.OK for f in frames)
    assert "".join(f.output.text for f in frames) == STORY
    assert [f.output.finish_reason for f in frames[:-1]] == ["null"] * (len(frames) - 1)
    assert frames[-1].output.finish_reason == "stop" and frames[-1].output.text == ""
    outs = [f.usage.models[0].output_tokens for f in frames]
    assert outs == sorted(outs) and outs[-1] == len(tokenize(STORY))
    assert len({f.output.session_id for f in frames}) == 1
    assert len({f.request_id for f in frames}) == 1


def test_stream_cumulative_by_default(server: BailuServer, story_app: str) -> None:
    frames = list(Application.call(app_id=story_app, prompt="hi", api_key=server.key, stream=True))
    texts = [f.output.text for f in frames]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == STORY and frames[-1].output.finish_reason == "stop"


def test_stream_merge_mode(server: BailuServer, story_app: str) -> None:
    """stream=True + incremental_output=False: the SDK asks for deltas and merges them itself."""
    frames = list(Application.call(app_id=story_app, prompt="hi", api_key=server.key, stream=True, incremental_output=False))
    texts = [f.output.text for f in frames]
    assert texts[-1] == STORY
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))


def test_bad_key_is_reported_not_raised(server: BailuServer, story_app: str) -> None:
    resp = Application.call(app_id=story_app, prompt="hi", api_key="sk-wrong")
    assert resp.status_code == 401
    assert resp.code == "InvalidApiKey"
    assert resp.message == "Invalid API-key provided."
    assert resp.request_id


def test_mid_stream_error_is_an_error_item(server: BailuServer) -> None:
    app = server.app(model="fails-midway")
    frames = list(Application.call(app_id=app, prompt="hi", api_key=server.key, stream=True, incremental_output=True))
    assert [f.status_code for f in frames[:-1]] == [200] * (len(frames) - 1)
    assert frames[-1].status_code == 500
    assert frames[-1].code == "ModelServiceFailed"
    assert "".join(f.output.text for f in frames[:-1]) == "this answer will"


def test_multi_turn_with_session_id(server: BailuServer, upstream) -> None:  # type: ignore[no-untyped-def]
    app = server.app(model="up-echo", instructions="You are a travel guide.")
    first = Application.call(app_id=app, prompt="我想去新疆", api_key=server.key)
    second = Application.call(app_id=app, prompt="那边有什么美食?", api_key=server.key, session_id=first.output.session_id)
    assert second.output.session_id == first.output.session_id
    sent = upstream.last("fake-echo")["messages"]
    assert sent == [
        {"role": "system", "content": "You are a travel guide."},
        {"role": "user", "content": "我想去新疆"},
        {"role": "assistant", "content": first.output.text},
        {"role": "user", "content": "那边有什么美食?"},
    ]
    assert second.usage.models[0].input_tokens > first.usage.models[0].input_tokens


def test_dashscope_cli(server: BailuServer, story_app: str) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DASHSCOPE_API_KEY": server.key, "DASHSCOPE_HTTP_BASE_URL": server.url}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dashscope")), "application", "create", "-a", story_app, "-p", "你好"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "从前有座山" in out.stdout
    start = out.stdout.index("{")
    first_json = json.JSONDecoder().raw_decode(out.stdout[start:])[0]
    assert first_json["finish_reason"] == "stop"
