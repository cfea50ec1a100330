"""Remote embedders and rerankers ([embedders.NAME], [rerankers.NAME]) against the recording fake
upstream, through a real server: ingestion, retrieval, an app call, failures and bad names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from bailu.config import ServiceConfig
from bailu.errors import ModelServiceFailed
from bailu.knowledge.remote import ApiReranker, OpenAIEmbedder
from bailu.store.db import Database
from bailu.store.tables import KbChunk
from tests.conftest import BailuServer
from tests.fakes import FakeUpstream
from tests.test_admin_api import api, wait_job

NOTES = {
    "coffee.md": "# Coffee\n\nCoffee beans are the roasted seeds of the coffee plant. Espresso is brewed by forcing hot water through finely ground coffee.",
    "tea.md": "# Tea\n\nGreen tea leaves are steamed, rolled and dried. Black tea is fully oxidised before drying. Tea was first drunk in China.",
    "bread.md": "# Bread\n\nBread dough is flour, water, salt and yeast, kneaded and left to rise before baking in a hot oven.",
    "rice.md": "# Rice\n\nRice is rinsed, soaked and simmered in water until tender; sushi rice is seasoned with vinegar.",
    "cheese.md": "# Cheese\n\nCheese is milk curdled with rennet, drained, salted and aged in cool cellars for months.",
}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+|[\u4e00-\u9fff]", text.lower()))


@pytest.fixture(scope="module")
def remote_kb(server: BailuServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("notes")
    for name, text in NOTES.items():
        (d / name).write_text(text, encoding="utf-8")
    kb = server.cli("kb", "create", "drinks", "--embedder", "up-embed", "--reranker", "up-rerank")
    before = len(server.upstream.calls)
    ids = server.cli_output("kb", "add", kb, *(str(d / n) for n in NOTES), "--wait").split()
    return {"kb": kb, "before": str(before), **dict(zip(NOTES, ids, strict=True))}


def test_kb_list_shows_embedder_and_reranker(server: BailuServer, remote_kb: dict[str, str]) -> None:
    lines = [line.split("\t") for line in server.cli_output("kb", "list").strip().splitlines()]
    assert [remote_kb["kb"], "unstructured", "up-embed", "up-rerank", "drinks"] in lines


def test_ingestion_embeds_through_the_endpoint(server: BailuServer, remote_kb: dict[str, str]) -> None:
    start = int(remote_kb["before"])
    sent = [(body, headers) for (path, body), headers in zip(server.upstream.calls[start:], server.upstream.call_headers[start:], strict=True)
            if path == "/v1/embeddings"]
    calls = [body for body, _ in sent]
    assert all(b["model"] == "fake-embed" and b["dimensions"] == 64 for b in calls)
    assert [len(b["input"]) for b in calls] == [4, 1]  # five one-chunk files, batched across files by batch_size 4
    assert all(h["authorization"] == "Bearer embed-secret" for _, h in sent)
    db = Database(f"sqlite:///{server.data_dir / 'bailu.db'}")
    with db.read() as s:
        chunks = list(s.scalars(select(KbChunk).where(KbChunk.kb_id == remote_kb["kb"])))
    db.dispose()
    assert sum(len(b["input"]) for b in calls) == len(chunks) == len(NOTES)  # one call per batch of 4, every chunk once
    for c in chunks:
        assert c.vector is not None
        v = np.frombuffer(c.vector, dtype=np.float32)
        assert v.shape == (64,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5  # normalised by bailu


def test_retrieval_is_reranked_and_reports_the_rerank_score(server: BailuServer, remote_kb: dict[str, str]) -> None:
    query = "how are coffee beans roasted"
    r = api(server, "POST", f"/knowledge_bases/{remote_kb['kb']}/retrieve", json={"query": query, "top_k": 3})
    assert r.status_code == 200, r.text
    nodes = r.json()["nodes"]
    assert nodes[0]["doc_name"] == "coffee.md"
    path, body = server.upstream.calls[-1]
    assert path == "/v1/rerank" and body["model"] == "fake-rerank" and body["query"] == query
    assert len(body["documents"]) == len(NOTES)  # every candidate of both lists, reranked
    expected = len(words(query) & words(f"Coffee\n{NOTES['coffee.md'].split(chr(10), 2)[2]}")) / len(words(query))
    assert nodes[0]["score"] == pytest.approx(expected, abs=1e-4)
    assert [n["score"] for n in nodes] == sorted((n["score"] for n in nodes), reverse=True)
    cut = api(server, "POST", f"/knowledge_bases/{remote_kb['kb']}/retrieve", json={"query": query, "top_k": 5, "threshold": expected - 1e-3})
    assert [n["doc_name"] for n in cut.json()["nodes"]] == ["coffee.md"]  # the threshold applies to the rerank score


def test_app_call_retrieves_with_the_remote_embedder(server: BailuServer, remote_kb: dict[str, str]) -> None:
    from dashscope import Application

    app = server.app(model="echo", knowledge={"pipeline_ids": [remote_kb["kb"]], "top_k": 1})
    resp = Application.call(api_key=server.key, app_id=app, prompt="steamed green tea leaves", has_thoughts=True, base_address=server.url)
    assert resp.status_code == 200, resp.message
    rag = [t for t in resp.output.thoughts if t["action_type"] == "agentRag"]
    assert "Green tea" in json.loads(rag[0]["observation"])[0]["text"]
    assert any(p == "/v1/embeddings" and b["input"] == ["steamed green tea leaves"] for p, b in server.upstream.calls)


def test_a_failing_embedder_fails_the_files_with_its_name(server: BailuServer, tmp_path: Path) -> None:
    kb = server.cli("kb", "create", "broken-embedder", "--embedder", "up-embed-broken")
    (tmp_path / "a.md").write_text("# A\n\nSome text.", encoding="utf-8")
    up = api(server, "POST", f"/knowledge_bases/{kb}/files", files=[("files", ("a.md", b"# A\n\nSome text."))])
    job = wait_job(server, up.json()["job_id"])
    assert job["status"] == "COMPLETED"
    (f,) = job["files"]
    assert f["index_status"] == "INSERT_ERROR" and "up-embed-broken" in f["message"] and "500" in f["message"]


def test_unknown_embedder_or_reranker_names_are_refused(server: BailuServer) -> None:
    r = api(server, "POST", "/knowledge_bases", json={"name": "x", "embedder": "nope"})
    assert r.status_code == 400 and "'nope'" in r.json()["message"] and "up-embed" in r.json()["message"] and r.json()["request_id"]
    r = api(server, "POST", "/knowledge_bases", json={"name": "x", "reranker": "nope"})
    assert r.status_code == 400 and "'nope'" in r.json()["message"]
    created = api(server, "POST", "/knowledge_bases", json={"name": "x", "embedder": "up-embed", "reranker": "none"}).json()
    assert (created["embedder"], created["reranker"]) == ("up-embed", None)


@pytest.mark.parametrize("provider, base", [("rerank-api", "/v1"), ("tei", ""), ("dashscope", "/api/v1")])
def test_each_rerank_shape(upstream: FakeUpstream, provider: str, base: str) -> None:
    root = upstream.base_url.removesuffix("/v1")
    reranker = ApiReranker(ServiceConfig(name="rr", provider=provider, base_url=root + base, model="gte-rerank"))
    try:
        docs = ["black tea", "roasted coffee beans", "coffee"]
        assert reranker.rerank("roasted coffee", docs) == [0.0, 1.0, 0.5]
        assert reranker.rerank("x", []) == []
    finally:
        reranker.close()


def test_embedder_errors_are_upstream_errors(upstream: FakeUpstream) -> None:
    broken = OpenAIEmbedder(ServiceConfig(name="e", provider="openai", base_url=upstream.base_url, model="fake-500"))
    gone = OpenAIEmbedder(ServiceConfig(name="gone", provider="openai", base_url="http://127.0.0.1:9/v1", model="m", timeout=2))
    ok = OpenAIEmbedder(ServiceConfig(name="ok", provider="openai", base_url=upstream.base_url, model="fake-embed", batch_size=2))
    try:
        with pytest.raises(ModelServiceFailed, match="'e' answered HTTP 500"):
            broken.embed(["x"])
        with pytest.raises(ModelServiceFailed, match="'gone' could not be reached"):
            gone.embed(["x"])
        vectors = ok.embed(["a b", "", "c", "a b"])  # the empty text is sent as " ": no words, a zero vector
        assert vectors.shape == (4, 32) and np.allclose(vectors[0], vectors[3])
        assert np.allclose(np.linalg.norm(vectors, axis=1), [1.0, 0.0, 1.0, 1.0])
        assert [len(b["input"]) for p, b in upstream.calls[-2:]] == [2, 2]
    finally:
        for e in (broken, gone, ok):
            e.close()


@pytest.mark.parametrize("toml, message", [
    ('[embedders.e]\nprovider = "openai"\nmodel = "m"', "needs base_url and model"),
    ('[embedders.e]\nprovider = "grpc"\nbase_url = "http://x"\nmodel = "m"', "provider must be one of openai"),
    ('[embedders.none]\nprovider = "openai"\nbase_url = "http://x"\nmodel = "m"', "built-in embedder"),
    ('[embedders.e]\nprovider = "openai"\nbase_url = "http://x"\nmodel = "m"\nbatch_size = 0', "must be positive"),
    ('[embedders.e]\nprovider = "openai"\nbase_url = "http://x"\nmodel = "m"\ndimension = 3', "unknown keys: dimension"),
    ('[rerankers.r]\nprovider = "cohere"\nbase_url = "http://x"\nmodel = "m"', "provider must be one of rerank-api, tei, dashscope"),
    ('[knowledge]\nembedder = "missing"', "embedder 'missing' is neither built in"),
    ('[knowledge]\nreranker = "missing"', "reranker 'missing' is not configured"),
])
def test_bad_knowledge_config_is_named(tmp_path: Path, toml: str, message: str) -> None:
    from bailu.config import load_settings
    from bailu.errors import ConfigError

    (tmp_path / "bailu.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(tmp_path)


def test_knowledge_config_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bailu.config import load_settings

    (tmp_path / "bailu.toml").write_text(
        '[knowledge]\nembedder = "e"\nreranker = "r"\n[embedders.e]\nprovider = "openai"\nbase_url = "http://x/v1"\nmodel = "m"\napi_key_env = "E_KEY"\n'
        '[rerankers.r]\nprovider = "tei"\nbase_url = "http://y"\nmodel = "bge"\n', encoding="utf-8")
    monkeypatch.setenv("E_KEY", "k1")
    k = load_settings(tmp_path).knowledge
    assert (k.embedder, k.reranker, k.embedders["e"].api_key, k.embedders["e"].batch_size, k.rerankers["r"].provider) == ("e", "r", "k1", 16, "tei")


@pytest.mark.parametrize("toml, message", [
    ('[knowledge]\nembeder = "x"', "[knowledge] has unknown keys: embeder"),
    ('embedders = "x"', "[embedders] must be a table"),
])
def test_more_bad_knowledge_config(tmp_path: Path, toml: str, message: str) -> None:
    from bailu.config import load_settings
    from bailu.errors import ConfigError

    (tmp_path / "bailu.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(tmp_path)
    (tmp_path / "bailu.toml").write_text('[knowledge]\nreranker = "none"', encoding="utf-8")
    assert load_settings(tmp_path).knowledge.reranker is None
    # an unset api_key_env is no error here (every CLI command loads the config): the endpoint will answer 401, named
    (tmp_path / "bailu.toml").write_text('[embedders.e]\nprovider = "openai"\nbase_url = "http://x"\nmodel = "m"\napi_key_env = "SURELY_UNSET_KEY"', encoding="utf-8")
    assert load_settings(tmp_path).knowledge.embedders["e"].api_key is None


def test_chinese_queries_use_a_configured_embedders_dense_list(server: BailuServer, tmp_path: Path) -> None:
    """The lexical-only rule for mostly-Chinese queries is MiniLM's; a configured embedder is
    taken as multilingual, so the query is embedded and its dense list used."""
    kb = server.cli("kb", "create", "中文", "--embedder", "up-embed", "--reranker", "none")
    (tmp_path / "茶.md").write_text("# 绿茶\n\n绿茶是蒸过、揉捻后烘干的茶叶。", encoding="utf-8")
    server.cli_output("kb", "add", kb, str(tmp_path / "茶.md"), "--wait")
    before = len(server.upstream.calls)
    r = api(server, "POST", f"/knowledge_bases/{kb}/retrieve", json={"query": "绿茶怎么做", "top_k": 1})
    assert r.status_code == 200 and "绿茶" in r.json()["nodes"][0]["text"]
    assert [b["input"] for p, b in server.upstream.calls[before:] if p == "/v1/embeddings"] == [["绿茶怎么做"]]
