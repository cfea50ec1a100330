"""The v2 `dashscope.Client` / `AsyncClient` surface (pydantic-strict) against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import dashscope
import pytest
from dashscope.v2.errors import AuthenticationError, BadRequestError, InternalServerError, PermissionDeniedError

from tests.conftest import BailuServer
from tests.fakes import FakeUpstream


@pytest.fixture(scope="module")
def client(server: BailuServer) -> Iterator[dashscope.Client]:
    with dashscope.Client(api_key=server.key, base_url=server.url, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def up_app(server: BailuServer) -> str:
    return server.app(model="up-echo", instructions="Be brief.", parameters={"temperature": 0.3, "max_tokens": 256})


def test_create_non_stream(client: dashscope.Client, up_app: str, upstream: FakeUpstream) -> None:
    resp = client.apps.completions.create(app_id=up_app, prompt="hello there")
    assert resp.text == "upstream heard: hello there"
    assert resp.finish_reason == "stop"
    assert resp.usage is not None and resp.usage.models[0].model_id == "up-echo"
    sent = upstream.last("fake-echo")
    assert resp.usage.models[0].input_tokens == sum(len(m["content"]) for m in sent["messages"])
    assert resp.usage.models[0].output_tokens == 4


def test_sampling_overrides_reach_upstream(client: dashscope.Client, up_app: str, upstream: FakeUpstream) -> None:
    client.apps.completions.create(app_id=up_app, prompt="x", temperature=1.1, top_p=0.5, top_k=20, seed=7)
    sent = upstream.last("fake-echo")
    assert sent["temperature"] == 1.1 and sent["top_p"] == 0.5 and sent["top_k"] == 20 and sent["seed"] == 7
    assert sent["max_tokens"] == 256  # from the app spec
    client.apps.completions.create(app_id=up_app, prompt="y")
    sent = upstream.last("fake-echo")
    assert sent["temperature"] == 0.3 and "seed" not in sent and "top_k" not in sent
    assert upstream.headers[-1]["authorization"] == "Bearer upstream-secret"


def test_stream_incremental(client: dashscope.Client, up_app: str) -> None:
    frames = list(client.apps.completions.create(app_id=up_app, prompt="a b c", stream=True, incremental_output=True))
    assert "".join(f.text or "" for f in frames) == "upstream heard: a b c"
    assert frames[-1].finish_reason == "stop"
    assert all(f.finish_reason == "null" for f in frames[:-1])
    assert frames[-1].usage is not None and frames[-1].usage.models[0].output_tokens == 5


def test_stream_cumulative(client: dashscope.Client, up_app: str) -> None:
    frames = list(client.apps.completions.create(app_id=up_app, prompt="a b", stream=True))
    assert frames[-1].text == "upstream heard: a b"
    assert [f.text for f in frames][-2] == "upstream heard: a b"


async def test_async_client(server: BailuServer, up_app: str) -> None:
    async with dashscope.AsyncClient(api_key=server.key, base_url=server.url, max_retries=0) as aclient:
        resp = await aclient.apps.completions.create(app_id=up_app, prompt="async hello")
        assert resp.text == "upstream heard: async hello"
        stream = await aclient.apps.completions.create(app_id=up_app, prompt="streamed", stream=True, incremental_output=True)
        pieces = [f.text async for f in stream]
        assert "".join(p or "" for p in pieces) == "upstream heard: streamed"


def test_no_key_at_all_is_401(server: BailuServer, up_app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DASHSCOPE_API_KEY",):
        monkeypatch.delenv(var, raising=False)
    with (
        dashscope.Client(api_key=None, base_url=server.url, max_retries=0, config_path="/nonexistent") as anonymous,
        pytest.raises(AuthenticationError) as exc,
    ):
        anonymous.apps.completions.create(app_id=up_app, prompt="hi")
    assert exc.value.status_code == 401


def test_typed_errors(client: dashscope.Client, server: BailuServer) -> None:
    with pytest.raises(PermissionDeniedError):
        client.apps.completions.create(app_id="0" * 32, prompt="hi")
    app = server.app(instructions="Hi {{name}}")
    with pytest.raises(BadRequestError) as exc:
        client.apps.completions.create(app_id=app, prompt="hi")
    assert '"name"' in str(exc.value)
    down = server.app(model="up-500")
    with pytest.raises(InternalServerError):
        client.apps.completions.create(app_id=down, prompt="hi")


def test_stream_error_raises(client: dashscope.Client, server: BailuServer) -> None:
    app = server.app(model="fails-midway")
    got: list[str] = []
    with pytest.raises(Exception) as exc:
        for f in client.apps.completions.create(app_id=app, prompt="hi", stream=True, incremental_output=True):
            got.append(f.text or "")
    assert "ModelServiceFailed" in repr(exc.value) or "model service" in str(exc.value).lower()
    assert "".join(got) == "this answer will"


def test_unicode_line_separators_survive_the_stream(client: dashscope.Client, server: BailuServer) -> None:
    app = server.app(model="linebreaks")
    frames = list(client.apps.completions.create(app_id=app, prompt="x", stream=True, incremental_output=True))
    assert "".join(f.text or "" for f in frames) == "line\u2028separated\u0085text"
