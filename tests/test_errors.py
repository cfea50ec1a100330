"""Every failure path answers DashScope error JSON with the right status (WIRE.md §5, BAILIAN.md §1)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import BailuServer


@pytest.fixture(scope="module")
def app_id(server: BailuServer) -> str:
    return server.app(model="echo")


def check(resp: httpx.Response, status: int, code: str, message: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"code", "message", "request_id"}, body
    assert body["code"] == code, body
    assert body["request_id"] and body["request_id"] == resp.headers["x-request-id"]
    assert "Traceback" not in body["message"] and 'File "' not in body["message"]
    if message is not None:
        assert message in body["message"], body["message"]
    return body


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{not json", "InvalidParameter", "Required body invalid"),
        (b"[1, 2]", "InvalidParameter", "Required body invalid"),
        (b"[" * 100_000, "InvalidParameter", "Required body invalid"),
        ({"parameters": {}}, "BadRequest.EmptyInput", "Required input parameter missing"),
        ({"input": "hello"}, "BadRequest.IllegalInput", "requires json format"),
        ({"input": {}}, "InvalidParameter", 'Either "prompt" or "messages" must exist'),
        ({"input": {"prompt": ""}}, "InvalidParameter", 'Either "prompt" or "messages" must exist'),
        ({"input": {"prompt": 42}}, "InvalidParameter", "input content must be a string"),
        ({"input": {"messages": []}}, "InvalidParameter", "[] is too short"),
        ({"input": {"messages": [{"role": "system", "content": "s"}]}}, "InvalidParameter", "do not contain elements with the role of user"),
        ({"input": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}}, "InvalidParameter", "last message"),
        ({"input": {"messages": [{"role": "wizard", "content": "q"}]}}, "InvalidParameter", "input.messages[0].role"),
        ({"input": {"messages": [{"role": "user", "content": ["x"]}]}}, "InvalidParameter", "input.messages[0].content"),
        ({"input": {"messages": [{"role": "user"}]}}, "InvalidParameter", "The content field is a required field"),
        ({"input": {"messages": "hi"}}, "InvalidParameter", "input.messages"),
        ({"input": {"prompt": "hi"}, "parameters": []}, "InvalidParameter", "parameters"),
        ({"input": {"prompt": "hi"}, "parameters": {"temperature": "hot"}}, "InvalidParameter", "parameters.temperature"),
        ({"input": {"prompt": "hi"}, "parameters": {"temperature": 3}}, "InvalidParameter", "parameters.temperature"),
        ({"input": {"prompt": "hi"}, "parameters": {"top_p": 0}}, "InvalidParameter", "parameters.top_p"),
        ({"input": {"prompt": "hi"}, "parameters": {"seed": 1.5}}, "InvalidParameter", "parameters.seed"),
        ({"input": {"prompt": "hi"}, "parameters": {"top_k": True}}, "InvalidParameter", "parameters.top_k"),
        ({"input": {"prompt": "hi"}, "parameters": {"incremental_output": "maybe"}}, "InvalidParameter", "parameters.incremental_output"),
        ({"input": {"prompt": "hi", "session_id": "../etc"}}, "InvalidParameter", "input.session_id"),
        ({"input": {"prompt": "hi", "session_id": 5}}, "InvalidParameter", "input.session_id"),
        ({"input": {"prompt": "hi", "biz_params": []}}, "InvalidParameter", "input.biz_params"),
        ({"input": {"prompt": "hi", "biz_params": {"user_prompt_params": "x"}}}, "InvalidParameter", "user_prompt_params"),
        ({"input": {"prompt": "hi", "history": "x"}}, "InvalidParameter", "input.history"),
    ],
)
def test_bad_requests(server: BailuServer, app_id: str, body: object, code: str, message: str) -> None:
    for stream in (False, True):
        check(server.post(app_id, body, stream=stream), 400, code, message)


def test_oversized_body_is_refused(server: BailuServer, app_id: str) -> None:
    check(server.post(app_id, b'{"input": {"prompt": "' + b"x" * (17 * 1024 * 1024) + b'"}}'), 400, "InvalidParameter", "larger than 16 MB")


def test_auth_failures(server: BailuServer, app_id: str) -> None:
    url = f"{server.url}/apps/{app_id}/completion"
    body = {"input": {"prompt": "hi"}}
    check(httpx.post(url, json=body), 401, "InvalidApiKey", "Invalid API-key provided.")
    check(httpx.post(url, json=body, headers={"Authorization": "Basic abc"}), 401, "InvalidApiKey")
    check(httpx.post(url, json=body, headers={"Authorization": "Bearer"}), 401, "InvalidApiKey")
    check(server.post(app_id, body, key="sk-" + "0" * 32), 401, "InvalidApiKey")


def test_app_access(server: BailuServer, app_id: str) -> None:
    body = {"input": {"prompt": "hi"}}
    check(server.post("f" * 32, body), 403, "App.AccessDenied", "App access denied.")
    draft = server.app(publish=False)
    check(server.post(draft, body), 403, "App.AccessDenied", "not been published")
    check(server.post(app_id, body, headers={"X-DashScope-Async": "enable"}), 403, "AccessDenied", "asynchronous")


def test_method_and_route(server: BailuServer, app_id: str) -> None:
    r = httpx.get(f"{server.url}/apps/{app_id}/completion", headers={"Authorization": f"Bearer {server.key}"})
    check(r, 400, "InvalidParameter", "Request method 'GET' is not supported.")
    check(httpx.post(f"{server.url}/nothing/here", json={}), 404, "NotFound")


@pytest.mark.parametrize(
    ("model", "status", "code", "message"),
    [
        ("up-500", 500, "ModelServiceFailed", "upstream HTTP 500"),
        ("up-429", 429, "Throttling", "throttling"),
        ("up-400", 400, "InvalidParameter", "context length exceeded"),
        ("up-slow", 500, "RequestTimeOut", "timed out"),
        ("up-down", 500, "ModelServiceFailed", "ConnectError"),
        ("up-break", 500, "ModelServiceFailed", "up-break"),
        ("not-configured", 503, "ModelUnavailable", "not configured"),
        ("no-weights", 503, "ModelUnavailable", "Model 'no-weights'"),
        ("buggy", 500, "InternalError", "An internal error has occured"),
    ],
)
def test_model_failures(server: BailuServer, model: str, status: int, code: str, message: str) -> None:
    app = server.app(model=model)
    resp = server.post(app, {"input": {"prompt": "hi"}})
    body = check(resp, status, code, message)
    assert "upstream-secret" not in body["message"]
    if status == 429:
        assert resp.headers["retry-after"] == "1"
    streamed = server.post(app, {"input": {"prompt": "hi"}}, stream=True)
    if model == "up-break":  # it fails after two chunks: an in-band error frame
        assert streamed.status_code == 200 and f"event:error\n:HTTP_STATUS/{status}\nstatus:{status}\n" in streamed.text
        assert f'"code":"{code}"' in streamed.text
    else:  # before the first frame, a stream request gets the same plain JSON error
        check(streamed, status, code, message)


def test_internal_error_is_logged_with_request_id(server: BailuServer) -> None:
    app = server.app(model="buggy")
    rid = server.post(app, {"input": {"prompt": "hi"}}).json()["request_id"]
    log = (server.data_dir / "serve.log").read_text()
    assert rid in log and "KeyError" in log


def test_mid_stream_error_frame(server: BailuServer) -> None:
    app = server.app(model="fails-midway")
    resp = server.post(app, {"input": {"prompt": "hi"}, "parameters": {"incremental_output": True}}, stream=True)
    assert resp.status_code == 200
    frames = resp.text.split("\n\n")
    last = [f for f in frames if f][-1].split("\n")
    assert last[1:4] == ["event:error", ":HTTP_STATUS/500", "status:500"]
    assert last[0] == f"id:{len([f for f in frames if f])}"
    assert '"code":"ModelServiceFailed"' in last[4] and last[4].startswith("data:{")
