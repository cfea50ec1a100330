"""The admin REST API for knowledge bases, over real HTTP: upload, jobs, retrieval, chunks, isolation."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.conftest import BailuServer
from tests.test_knowledge import phone_docx


def api(server: BailuServer, method: str, path: str, key: str | None = None, **kw):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key or server.key}", **kw.pop("headers", {})}
    return httpx.request(method, f"{server.url}/admin{path}", headers=headers, timeout=30, **kw)


def wait_job(server: BailuServer, job_id: str) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        job = api(server, "GET", f"/jobs/{job_id}").json()
        if job["status"] in ("COMPLETED", "FAILED"):
            return job
        time.sleep(0.2)
    raise AssertionError("job did not finish")


@pytest.fixture(scope="module")
def kb(server: BailuServer) -> dict:
    r = api(server, "POST", "/knowledge_bases", json={"name": "手机库", "chunk_size": 200, "overlap": 50})
    assert r.status_code == 201, r.text
    created = r.json()
    files = [("files", ("百炼系列手机产品介绍.docx", phone_docx())), ("files", ("bad.pdf", b"%PDF-1.4 nope"))]
    up = api(server, "POST", f"/knowledge_bases/{created['id']}/files", files=files, data={"tags": "手机,产品", "metadata": '{"brand": "百炼"}'})
    assert up.status_code == 202, up.text
    job = wait_job(server, up.json()["job_id"])
    assert job["status"] == "COMPLETED"
    by_name = {f["name"]: f for f in job["files"]}
    assert by_name["百炼系列手机产品介绍.docx"]["index_status"] == "FINISH"
    assert by_name["百炼系列手机产品介绍.docx"]["tags"] == ["手机", "产品"]
    assert (by_name["bad.pdf"]["status"], by_name["bad.pdf"]["index_status"]) == ("PARSE_FAILED", "INSERT_ERROR")
    return {**created, "file": by_name["百炼系列手机产品介绍.docx"]["id"], "bad": by_name["bad.pdf"]["id"]}


def test_retrieve_and_chunk_edits(server: BailuServer, kb: dict) -> None:
    r = api(server, "POST", f"/knowledge_bases/{kb['id']}/retrieve", json={"query": "折叠屏手机", "top_k": 2})
    nodes = r.json()["nodes"]
    assert "Flex Fold+" in nodes[0]["text"] and nodes[0]["doc_id"] == kb["file"]
    chunks = api(server, "GET", f"/knowledge_bases/{kb['id']}/chunks", params={"file_id": kb["file"]}).json()["chunks"]
    fold = next(c for c in chunks if c["id"] == nodes[0]["chunk_id"])
    assert api(server, "PATCH", f"/chunks/{fold['id']}", json={"enabled": False}).json()["enabled"] is False
    again = api(server, "POST", f"/knowledge_bases/{kb['id']}/retrieve", json={"query": "折叠屏手机", "top_k": 5}).json()["nodes"]
    assert fold["id"] not in [n["chunk_id"] for n in again]
    edited = api(server, "PATCH", f"/chunks/{fold['id']}", json={"enabled": True, "text": "百炼 Flex Fold+ 是一款折叠屏手机。"}).json()
    assert edited["text"] == "百炼 Flex Fold+ 是一款折叠屏手机。"
    top = api(server, "POST", f"/knowledge_bases/{kb['id']}/retrieve", json={"query": "折叠屏手机", "top_k": 1}).json()["nodes"][0]
    assert top["chunk_id"] == fold["id"] and top["text"] == edited["text"]
    assert api(server, "DELETE", f"/chunks/{fold['id']}").json() == {"id": fold["id"], "deleted": True}
    assert api(server, "PATCH", f"/chunks/{fold['id']}", json={"enabled": True}).status_code == 404


def test_delete_file_removes_its_chunks(server: BailuServer, kb: dict) -> None:
    assert api(server, "GET", f"/files/{kb['bad']}").json()["message"]
    assert api(server, "DELETE", f"/files/{kb['bad']}").status_code == 200
    assert api(server, "GET", f"/files/{kb['bad']}").status_code == 404
    names = [f["name"] for f in api(server, "GET", f"/knowledge_bases/{kb['id']}/files").json()["files"]]
    assert names == ["百炼系列手机产品介绍.docx"]


def test_bad_input_is_a_dashscope_error(server: BailuServer, kb: dict) -> None:
    for method, path, kw, status, needle in (
        ("POST", "/knowledge_bases", {"json": {"name": "x", "chunk_size": 100, "overlap": 100}}, 400, "overlap"),
        ("POST", "/knowledge_bases", {"json": {"nom": "x"}}, 400, "name"),
        ("POST", f"/knowledge_bases/{kb['id']}/retrieve", {"json": {"query": ""}}, 400, "query"),
        ("POST", f"/knowledge_bases/{kb['id']}/files", {"files": [("files", ("a.txt", b"x"))], "data": {"metadata": "[1]"}}, 400, "metadata"),
        ("GET", "/knowledge_bases/nope", {}, 404, "nope"),
    ):
        r = api(server, method, path, **kw)
        body = r.json()
        assert r.status_code == status and set(body) == {"code", "message", "request_id"} and needle in body["message"], r.text
    assert api(server, "GET", "/knowledge_bases", key="sk-bad").json()["code"] == "InvalidApiKey"


def test_other_workspaces_see_nothing(server: BailuServer, kb: dict) -> None:
    ws = server.cli("workspace", "create", f"iso-{uuid.uuid4().hex[:6]}")
    key = server.cli("key", "create", "--workspace", ws)
    assert api(server, "GET", "/knowledge_bases", key=key).json() == {"knowledge_bases": []}
    for method, path in (("GET", f"/knowledge_bases/{kb['id']}"), ("GET", f"/files/{kb['file']}"),
                         ("GET", f"/knowledge_bases/{kb['id']}/chunks"), ("DELETE", f"/files/{kb['file']}"),
                         ("DELETE", f"/knowledge_bases/{kb['id']}")):
        mine = api(server, method, path, key=key)
        assert mine.status_code == 404 and mine.json()["code"] == "NotFound"
    r = api(server, "POST", f"/knowledge_bases/{kb['id']}/retrieve", key=key, json={"query": "手机"})
    assert r.status_code == 404
    assert api(server, "GET", "/knowledge_bases", headers={"X-DashScope-WorkSpace": ws}).json()["code"] == "Workspace.AccessDenied"
    assert api(server, "GET", f"/files/{kb['file']}").status_code == 200  # still there for its owner


def test_delete_a_knowledge_base(server: BailuServer) -> None:
    created = api(server, "POST", "/knowledge_bases", json={"name": "短命"}).json()
    up = api(server, "POST", f"/knowledge_bases/{created['id']}/files", files=[("files", ("a.md", "# 茶\n\n绿茶是蒸过的。".encode()))])
    assert wait_job(server, up.json()["job_id"])["status"] == "COMPLETED"
    (file_id,) = up.json()["file_ids"]
    stored = list((server.data_dir / "files").glob(f"{file_id}*"))
    assert len(stored) == 1
    app = server.app(model="echo", knowledge={"pipeline_ids": [created["id"]]})
    assert server.post(app, {"input": {"prompt": "绿茶"}}).status_code == 200
    assert api(server, "DELETE", f"/knowledge_bases/{created['id']}").json() == {"id": created["id"], "deleted": True}
    assert api(server, "GET", f"/knowledge_bases/{created['id']}").status_code == 404
    assert api(server, "GET", f"/files/{file_id}").status_code == 404 and not stored[0].exists()
    gone = server.post(app, {"input": {"prompt": "绿茶"}})
    assert gone.status_code == 400 and gone.json()["message"] == f"the app's knowledge.pipeline_ids: no knowledge base '{created['id']}' in this workspace."
    assert api(server, "DELETE", f"/knowledge_bases/{created['id']}").status_code == 404
    other = server.cli("kb", "create", "cli-short-lived")
    assert server.cli("kb", "delete", other) == other
    assert other not in server.cli_output("kb", "list")


def test_openapi_document(server: BailuServer) -> None:
    spec = httpx.get(f"{server.url}/admin/openapi.json").json()
    assert "/api/v1/admin/knowledge_bases/{kb_id}/files" in spec["paths"]


def test_admin_input_is_checked_strictly_and_errors_read_well(server: BailuServer, kb: dict) -> None:
    r = api(server, "POST", "/knowledge_bases", json={"name": ""})
    assert r.status_code == 400 and r.json()["message"] == "Required parameter missing or invalid: name: String should have at least 1 character."
    chunk = api(server, "GET", f"/knowledge_bases/{kb['id']}/chunks").json()["chunks"][0]
    r = api(server, "PATCH", f"/chunks/{chunk['id']}", json={"enabled": "no"})  # a JSON boolean, not a word
    assert r.status_code == 400 and "enabled: Input should be a valid boolean" in r.json()["message"]
    r = api(server, "POST", f"/knowledge_bases/{kb['id']}/retrieve", json={"query": "手机", "file_ids": ["file_nope"]})
    assert r.status_code == 400 and "'file_nope'" in r.json()["message"]
    got = api(server, "GET", f"/knowledge_bases/{kb['id']}").json()
    assert got["created_at"].endswith("+00:00")
    table = api(server, "POST", "/knowledge_bases", json={"name": "表", "structured": True}).json()
    r = api(server, "POST", f"/knowledge_bases/{table['id']}/files", files=[("files", ("notes.md", b"# x"))])
    assert r.status_code == 400 and "notes.md" in r.json()["message"] and "csv" in r.json()["message"]
    assert api(server, "GET", f"/knowledge_bases/{table['id']}/files").json()["files"] == []


def test_cli_refuses_what_it_cannot_do(server: BailuServer, kb: dict) -> None:
    from click.testing import CliRunner

    from bailu.cli import main

    env = {k: v for k, v in server.env.items() if k.startswith("BAILU_")}
    for args, needle in ((["kb", "retrieve", kb["id"], "手机", "--top-k", "0"], "--top-k"), (["kb", "retrieve", kb["id"], "  "], "empty"),
                         (["kb", "chunk-update", "1"], "nothing to change")):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2 and needle in result.output, result.output
    whole = json.loads(server.cli_output("kb", "chunks", kb["id"], "--json"))
    assert whole and all(isinstance(c["id"], int) and c["text"] for c in whole) and any("Zephyr Z9" in c["text"] for c in whole)
