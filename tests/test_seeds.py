"""The seed documents' agent-app examples (SEED-EXAMPLES.md S01, S03–S08, S21–S24, S26),
sent as the seeds send them: raw curl bodies and the Python SDK calls."""

from __future__ import annotations

import httpx
import pytest
from dashscope import Application

from tests.conftest import BailuServer
from tests.fakes import FakeUpstream
from tests.test_wire import frames_of


pytestmark = pytest.mark.usefixtures("legacy_sdk")


@pytest.fixture(scope="module")
def app(server: BailuServer) -> str:
    return server.app(model="up-echo", instructions="你是一个乐于助人的助手。")


def test_s01_s23_single_turn(server: BailuServer, app: str) -> None:
    for body in ({"input": {"prompt": "你是谁?"}, "parameters": {}, "debug": {}}, {"input": {"prompt": "Who are you?"}}):
        out = server.post(app, body).json()
        assert out["output"]["finish_reason"] == "stop" and out["output"]["text"]
        assert len(out["output"]["session_id"]) == 32 and out["request_id"]
        (m,) = out["usage"]["models"]
        assert isinstance(m["input_tokens"], int) and isinstance(m["output_tokens"], int)


def test_s03_s24_multi_turn_session(server: BailuServer, app: str, upstream: FakeUpstream) -> None:
    first = Application.call(api_key=server.key, app_id=app, prompt="你是谁？")
    second = Application.call(api_key=server.key, app_id=app, prompt="你有什么技能？", session_id=first.output.session_id)
    assert second.output.session_id == first.output.session_id
    assert "你是谁？" in [m["content"] for m in upstream.last("fake-echo")["messages"]]
    # the seed's literal id in a fresh deployment: an unknown id starts empty and is kept
    body = {"input": {"prompt": "What skills do you have?", "session_id": "4f8ef7233dc641aba496cb201fa59f8c"}, "parameters": {}, "debug": {}}
    assert server.post(app, body).json()["output"]["session_id"] == "4f8ef7233dc641aba496cb201fa59f8c"


def test_s04_follow_up_sees_history(server: BailuServer, app: str, upstream: FakeUpstream) -> None:
    t1 = server.post(app, {"input": {"prompt": "我想去新疆"}, "parameters": {}, "debug": {}}).json()
    t2 = server.post(app, {"input": {"prompt": "那边有什么美食?", "session_id": t1["output"]["session_id"]}, "parameters": {}, "debug": {}}).json()
    assert t2["output"]["session_id"] == t1["output"]["session_id"]
    assert t2["usage"]["models"][0]["input_tokens"] > t1["usage"]["models"][0]["input_tokens"]
    assert "新疆" in str(upstream.last("fake-echo")["messages"])


def test_s05_messages(server: BailuServer, app: str, upstream: FakeUpstream) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "你是谁？"},
        {"role": "assistant", "content": "我是阿里云开发的一款超大规模语言模型，我叫通义千问。"},
        {"role": "user", "content": "你能做什么？"},
    ]
    out = server.post(app, {"input": {"messages": messages}, "parameters": {}, "debug": {}}).json()
    assert out["output"]["text"] == "upstream heard: 你能做什么？"
    assert upstream.last("fake-echo")["messages"][1:] == messages[1:]


def test_s06_s26_stream_incremental(server: BailuServer, app: str) -> None:
    resp = server.post(app, {"input": {"prompt": "你是谁?"}, "parameters": {"incremental_output": True}, "debug": {}}, stream=True)
    frames = frames_of(resp)
    assert "".join(f["output"]["text"] for f in frames) == "upstream heard: 你是谁?"
    assert frames[-1]["output"] == {"session_id": frames[0]["output"]["session_id"], "finish_reason": "stop", "text": ""}
    outs = [f["usage"]["models"][0]["output_tokens"] for f in frames]
    assert outs == sorted(outs)
    sdk = list(Application.call(api_key=server.key, app_id=app, prompt="Who are you?", stream=True, incremental_output=True))
    assert "".join(f.output.text for f in sdk) == "upstream heard: Who are you?"


def test_s07_stream_cumulative(server: BailuServer, app: str) -> None:
    resp = server.post(app, {"input": {"prompt": "寝室公约内容"}}, stream=True)
    texts = [f["output"]["text"] for f in frames_of(resp)]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == texts[-2] == "upstream heard: 寝室公约内容"


def test_s08_prompt_variables(server: BailuServer, upstream: FakeUpstream) -> None:
    food = server.app(model="up-echo", instructions="请给出{{city}}的三种美食推荐，只显示美食名称，逗号隔开。")
    resp = Application.call(api_key=server.key, app_id=food, prompt="美食推荐", biz_params={"user_prompt_params": {"city": "北京"}})
    assert resp.status_code == 200
    assert upstream.last("fake-echo")["messages"][0] == {"role": "system", "content": "请给出北京的三种美食推荐，只显示美食名称，逗号隔开。"}


def test_s21_invalid_key(server: BailuServer, app: str) -> None:
    resp = Application.call(api_key="sk-invalid", app_id=app, prompt="你是谁?")
    assert (resp.status_code, resp.code, resp.message) == (401, "InvalidApiKey", "Invalid API-key provided.")
    assert resp.output is None and resp.usage is None and resp.request_id


def test_s22_any_host_name(server: BailuServer, app: str) -> None:
    resp = httpx.post(f"{server.url}/apps/{app}/completion", json={"input": {"prompt": "hi"}},
                      headers={"Authorization": f"Bearer {server.key}",
                               "Host": "ep-2zei6917b47eed.dashscope.cn-beijing.privatelink.aliyuncs.com"})
    assert resp.status_code == 200 and resp.json()["output"]["text"] == "upstream heard: hi"
