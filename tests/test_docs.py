"""Docs drift tests: the examples in README.md and docs/ run, and every error code is documented."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bailu import errors
from bailu.appspec import parse_spec
from bailu.config import load_settings
from tests.conftest import BailuServer

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_commands() -> None:
    first = blocks(ROOT / "README.md", "sh")[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize("block", blocks(DOCS / "app-spec.md", "yaml") + blocks(DOCS / "knowledge.md", "yaml"))
def test_app_spec_examples_load(block: str) -> None:
    spec = parse_spec(yaml.safe_load(block))
    assert spec.type == "agent"


@pytest.mark.parametrize("doc", ["configuration.md", "../README.md"])
def test_toml_examples_load(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAILU_DATABASE_URL", raising=False)
    monkeypatch.setenv("QWEN_API_KEY", "k")
    for i, block in enumerate(blocks(DOCS / doc, "toml")):
        cfg = tmp_path / f"c{i}.toml"
        cfg.write_text(block, encoding="utf-8")
        settings = load_settings(tmp_path, cfg)
        assert "default" in settings.models and len(settings.models) > 1


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.BailuError)]
    for cls in classes:
        assert f"`{cls.code}`" in text, cls.code


@pytest.fixture(scope="module")
def food_app(server: BailuServer) -> str:
    heredoc = re.search(r"<<'YAML'\n(.*?)YAML\n", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert heredoc
    spec = yaml.safe_load(heredoc.group(1))
    spec["model"] = "up-echo"  # the README's Ollama model, served by the test upstream
    return server.app(spec)


def test_readme_python_example(server: BailuServer, food_app: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = blocks(ROOT / "README.md", "python")
    monkeypatch.setenv("DASHSCOPE_API_KEY", server.key)
    monkeypatch.setenv("APP_ID", food_app)
    exec(compile(code.replace("http://127.0.0.1:8080/api/v1", server.url), "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("upstream heard: 美食推荐 ")
    assert server.upstream.last("fake-echo")["messages"][0]["content"].startswith("请给出北京的三种美食推荐")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_readme_curl_example(server: BailuServer, food_app: str) -> None:
    curl = next(b for b in blocks(ROOT / "README.md", "sh") if b.startswith("curl"))
    env = {**os.environ, "APP_ID": food_app, "DASHSCOPE_API_KEY": server.key}
    out = subprocess.run(["bash", "-c", curl.replace("http://127.0.0.1:8080", server.base)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("id:1\nevent:result\n:HTTP_STATUS/200\ndata:{")
    assert '"finish_reason":"stop"' in out.stdout


@pytest.mark.parametrize("block", blocks(DOCS / "models.md", "toml"))
async def test_model_examples_call_through(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream) -> None:  # type: ignore[no-untyped-def]
    """Each example config, pointed at the fake upstream, makes a real request the way it says."""
    from bailu.models import ChatRequest, ModelRegistry

    monkeypatch.setenv("DASHSCOPE_API_KEY", "ds-key")
    monkeypatch.setenv("OPENAI_API_KEY", "oa-key")
    cfg = tmp_path / "bailu.toml"
    cfg.write_text(block, encoding="utf-8")
    settings = load_settings(tmp_path, cfg)
    (name,) = [n for n in settings.models if n != "default" or "[models.default]" in block]
    config = settings.models[name]
    if config.provider != "openai":
        assert config.provider == "llama-cpp" and config.options["max_queue"] == 16
        return
    registry = ModelRegistry({name: type(config)(**{**config.__dict__, "base_url": upstream.base_url})})
    chunks = [c async for c in registry.get(name).stream(ChatRequest(messages=[{"role": "user", "content": "ping"}]))]
    await registry.aclose()
    assert "".join(c.text for c in chunks) == "upstream heard: ping"
    sent = upstream.last()
    assert sent["model"] == config.upstream_model and sent["stream"] is True
    if "continuous_usage" in block:
        assert sent["stream_options"]["continuous_usage_stats"] is True
    if "extra_body" in block:
        assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    if "api_key_env" in block:
        assert upstream.headers[-1]["authorization"] in ("Bearer ds-key", "Bearer oa-key")


def test_knowledge_toml_example_runs_against_each_endpoint(upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """docs/knowledge.md's [embedders] / [rerankers] load, and each one works with its base_url
    pointed at the recording fake upstream (same provider, same request shape)."""
    from bailu.knowledge.embedders import Embedders
    from bailu.knowledge.rerankers import Rerankers

    monkeypatch.setenv("DASHSCOPE_API_KEY", "k")
    (block,) = blocks(DOCS / "knowledge.md", "toml")
    root = upstream.base_url.removesuffix("/v1")
    paths = {"openai": "/v1", "rerank-api": "/v1", "tei": "", "dashscope": "/api/v1"}
    settings = load_settings(tmp_path, _write(tmp_path / "k.toml", block)).knowledge
    assert settings.embedder == "qwen-embed" and settings.reranker == "gte-rerank"
    local = re.sub(r'base_url = "[^"]*"\nmodel = "([^"]*)"', lambda m: f'base_url = "@@"\nmodel = "{m.group(1)}"', block)
    for section in re.split(r"(?=^\[)", local, flags=re.M):
        kind = re.search(r'provider = "([^"]+)"', section)
        if kind:
            local = local.replace(section, section.replace("@@", root + paths[kind.group(1)]))
    settings = load_settings(tmp_path, _write(tmp_path / "l.toml", local)).knowledge
    embedders, rerankers = Embedders(settings), Rerankers(settings)
    try:
        for name in settings.embedders:
            embedder = embedders.get(name)
            assert embedder is not None and embedder.embed(["百炼 手机"]).shape[0] == 1
        for name in settings.rerankers:
            assert rerankers.get(name).rerank("roasted coffee", ["tea", "roasted coffee"]) == [0.0, 1.0]
    finally:
        embedders.close()
        rerankers.close()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_knowledge_cli_example_runs(server: BailuServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/knowledge.md's command-line block, line by line against a real server's data directory:
    KB, FILE_ID and CHUNK_ID stand for what the earlier lines printed; optional [..] parts are dropped."""
    import shlex

    from tests.test_knowledge import phone_docx, tiny_pdf

    (tmp_path / "百炼系列手机产品介绍.docx").write_bytes(phone_docx())
    (tmp_path / "specs.pdf").write_bytes(tiny_pdf(["Zephyr Z9 weighs 168 g", "Flex Fold+ folds twice"]))
    monkeypatch.chdir(tmp_path)
    block = next(b for b in blocks(DOCS / "knowledge.md", "sh") if "bailu kb list" in b)
    seen: dict[str, str] = {}
    for line in block.strip().splitlines():
        command = re.sub(r"\s*\[[^\]]*\]", "", line.split("  #")[0]).strip()
        args = [seen.get(a, a) for a in shlex.split(command)][1:]
        out = server.cli_output(*args)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if args[:2] == ["kb", "create"]:
            seen["KB"] = last
        elif args[:2] == ["kb", "add"]:
            seen["FILE_ID"] = out.split()[0]  # the .docx: deleted further down
        elif args[:2] == ["kb", "retrieve"]:
            assert "Zephyr Z9" in json.loads(out)[0]["text"]
        elif args[:2] == ["kb", "chunks"]:
            seen["CHUNK_ID"] = out.split("\t", 1)[0]
            assert seen["FILE_ID"] not in out and "Zephyr Z9 weighs 168 g" in out  # the .docx's chunks are gone
        elif args[:2] == ["kb", "list"]:
            assert seen["KB"] in out
    assert seen["KB"] not in server.cli_output("kb", "list")  # the last line deleted it
