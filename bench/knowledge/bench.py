"""Knowledge-base benchmark (not a test; run by hand): ingestion, retrieval latency, recall.

    .venv/bin/python bench/knowledge/bench.py [--filler 100000] [--queries 300] [--seed 0] [--profile]
    .venv/bin/python bench/knowledge/bench.py --scale 0.1 --filler 10000 --queries 40 --latency-queries 50 --no-save  # smoke, ~1 min

Measures, in one run, on a temporary SQLite database (no network at all):

1. Ingestion throughput: chunks/s of ``run_job`` (parse → chunk → embed → store) over real
   documents, against ``MiniLMEmbedder().embed`` alone on the very same chunk texts (``title\ntext``
   as ingestion embeds them; same batch size, 32), in the same process, in rotating order over
   four groups of documents; plus the embedder called once per file (as run_job calls it), the
   time inside run_job split into parse / chunk / embed / store / rest, and the padding each way.
2. Retrieval latency of ``Retriever.retrieve`` (hybrid, top_k=5) at 10k and 100k chunks:
   cold snapshot build, then warm p50 / p90 / p99, and the per-stage cost of a warm query.
   The large knowledge bases' rows carry their lexical tokens, as ingestion stores them.
3. Recall@5 (and MRR@5) of lexical only, dense only and hybrid (``Retriever``) on retrieval sets
   derived mechanically from text nobody on the team wrote (``recall_set``, ``summary_set``),
   English and Chinese; plus what-if fusions computed from the same score vectors.

Sources (all read from disk, nothing downloaded):
* English: ``*.md``, ``*.rst`` and ``METADATA`` descriptions of the packages installed in this
  venv (bailu's own excluded, licence files excluded);
* Chinese: the zh_CN gettext catalogues of the Debian packages installed on the machine
  (``/usr/share/locale/zh_CN/LC_MESSAGES/*.mo``: translators' help texts) and the Chinese
  ``*.md`` files shipped inside the dashscope package.

The 10k / 100k knowledge bases are not built through run_job (embedding 100k chunks takes ~1 h
on 2 cores): their rows are inserted directly. Texts: distinct real passages (≤ 500 characters)
cut from the ``.py`` / ``.md`` / ``.rst`` / ``.txt`` files of site-packages; vectors: the real
MiniLM vectors of the chunks ingested in part 1, tiled and perturbed (Gaussian noise, σ=0.03 per
dimension, then L2-normalised: cosine ≈ 0.86 to the vector they come from). Dense-search cost
does not depend on the vectors' values; lexical cost does depend on the texts, which are real.

Prints a table, then one JSON line; also writes it to bench/knowledge/results/ (git-ignored).
Figures and their reading: docs/performance-knowledge.md.
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select

from bailu.knowledge import ingest as ingest_mod
from bailu.knowledge import retrieval as retrieval_mod
from bailu.knowledge import store as kb_store
from bailu.knowledge.chunking import chunk_blocks
from bailu.knowledge.embedders import DEFAULT_EMBEDDER, get_embedder
from bailu.knowledge.ingest import run_job
from bailu.knowledge.lexical import chunk_tokens
from bailu.knowledge.minilm import BATCH_SIZE, MiniLMEmbedder
from bailu.knowledge.parsing import parse
from bailu.knowledge.retrieval import Retriever, _top
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database
from bailu.store.tables import KbChunk, KnowledgeBase

SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
ZH_LOCALE = Path("/usr/share/locale/zh_CN/LC_MESSAGES")
CJK = re.compile(r"[\u4e00-\u9fff]")
CHUNK_SIZE, OVERLAP = 500, 100  # Bailian's defaults
EN_BUDGET = 450_000  # characters of English documents to ingest (≈ 1,200 chunks)
ZH_BUDGET = 160_000  # characters of Chinese documents to ingest (≈ 400 chunks)
PER_DOC_CAP = 20_000  # characters taken from one document at most (spreads the corpus over packages)
NOISE_SIGMA = 0.03


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


# --- sources -------------------------------------------------------------------------------------


def _excluded(path: Path) -> bool:
    parts = path.relative_to(SITE).parts
    top = parts[0].lower()
    name = path.name.upper()
    return top.startswith(("bailu", "__editable__")) or any(w in name for w in ("LICENSE", "LICENCE", "COPYING", "AUTHORS", "NOTICE"))


def _cap(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    cut = text.rfind("\n\n", 0, cap)
    return text[: cut if cut > cap // 2 else cap]


SUMMARIES: dict[str, str] = {}  # ingested file name -> the package's one-line Summary (METADATA files only)


def english_docs(rng: random.Random) -> list[tuple[str, str]]:
    """(file name, text) of real English documents from site-packages, up to EN_BUDGET characters.
    For METADATA files the package's ``Summary:`` header is kept aside in SUMMARIES."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    paths = sorted(p for pat in ("**/*.md", "**/*.rst", "*.dist-info/METADATA") for p in SITE.glob(pat))
    for p in paths:
        if not p.is_file() or _excluded(p):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        suffix = ".md" if p.suffix == ".md" else ".txt"
        summary = ""
        if p.name == "METADATA":
            head, _, body = text.partition("\n\n")
            text = body
            if "markdown" in head.lower():
                suffix = ".md"
            m = re.search(r"^Summary: (.+)$", head, re.MULTILINE)
            summary = m.group(1).strip() if m else ""
        if len(CJK.findall(text)) > 20 or len(text.strip()) < 400:
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        package = p.relative_to(SITE).parts[0].split("-")[0]
        found.append((f"{package}-{p.stem}{suffix}", _cap(text, PER_DOC_CAP)))
        if summary:
            SUMMARIES[found[-1][0]] = summary
    rng.shuffle(found)
    out, total = [], 0
    for name, text in found:
        if total >= EN_BUDGET:
            break
        out.append((name, text))
        total += len(text)
    return out


def chinese_docs(rng: random.Random) -> list[tuple[str, str]]:
    """(file name, text) of real Chinese text: zh_CN gettext catalogues and dashscope's Chinese docs."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for p in sorted(SITE.glob("dashscope/**/*.md")):
        text = p.read_text(encoding="utf-8")
        digest = hashlib.sha256(text.encode()).hexdigest()
        if len(CJK.findall(text)) >= 500 and digest not in seen:
            seen.add(digest)
            out.append((f"dashscope-{p.parent.name}-{p.stem}.md", _cap(text, PER_DOC_CAP)))
    catalogues = sorted(ZH_LOCALE.glob("*.mo")) if ZH_LOCALE.is_dir() else []
    rng.shuffle(catalogues)
    total = sum(len(t) for _, t in out)
    for mo in catalogues:
        if total >= ZH_BUDGET:
            break
        try:
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a catalogue we cannot read is skipped
            log(f"skipping {mo.name}: {exc}")
            continue
        messages = []
        for msg in catalog.values():
            if not isinstance(msg, str) or len(CJK.findall(msg)) < 8:
                continue
            msg = re.sub(r"\n\s*\n", "\n", msg).strip()
            if msg not in seen:
                seen.add(msg)
                messages.append(msg)
        if not messages:
            continue
        text = _cap("\n\n".join(messages), min(PER_DOC_CAP, ZH_BUDGET - total + 1000))
        out.append((f"{mo.stem}.zh_CN.txt", text))
        total += len(text)
    return out


def filler_passages(n: int, rng: random.Random, exclude: set[str]) -> list[tuple[str, str]]:
    """n distinct real passages (≤ 500 characters) from site-packages' source and documentation."""
    paths = sorted(p for pat in ("**/*.py", "**/*.md", "**/*.rst", "**/*.txt") for p in SITE.glob(pat))
    paths = [p for p in paths if p.is_file() and not _excluded(p)]
    rng.shuffle(paths)
    out: list[tuple[str, str]] = []
    seen: set[str] = set(exclude)
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        title = p.stem
        current = ""
        for para in re.split(r"\n\s*\n", text):
            para = para.strip()
            if not para:
                continue
            if current and len(current) + len(para) + 1 > CHUNK_SIZE:
                if len(current) >= 120 and current not in seen:
                    seen.add(current)
                    out.append((title, current))
                current = ""
            current = (current + "\n" + para).strip() if current else para[:CHUNK_SIZE]
            if len(out) >= n:
                return out
        if len(current) >= 120 and current not in seen and len(out) < n:
            seen.add(current)
            out.append((title, current))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct filler passages found, {n} wanted")
    return out


# --- part 1: ingestion -----------------------------------------------------------------------------


class StageClock:
    """Wraps the functions run_job calls (parse, chunk_blocks, chunk_tokens, embed, replace_chunks) with timers."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {"parse": 0.0, "chunk": 0.0, "tokens": 0.0, "embed": 0.0, "store_rows": 0.0}
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, attr: str, key: str) -> None:
        fn = getattr(owner, attr)
        self._saved.append((owner, attr, fn))

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[key] += time.perf_counter() - t

        setattr(owner, attr, timed)

    def __enter__(self) -> StageClock:  # noqa: PYI034
        self._wrap(ingest_mod, "parse", "parse")
        self._wrap(ingest_mod, "chunk_blocks", "chunk")
        self._wrap(ingest_mod, "chunk_tokens", "tokens")
        self._wrap(kb_store, "replace_chunks", "store_rows")
        embedder = get_embedder(DEFAULT_EMBEDDER)
        self._wrap(embedder, "embed", "embed")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, fn in reversed(self._saved):
            if attr == "embed":
                delattr(owner, attr)  # back to the class method
            else:
                setattr(owner, attr, fn)


def add_files(db: Database, data_dir: Path, kb: KnowledgeBase, docs: list[tuple[str, str]]) -> str:
    (data_dir / "files").mkdir(exist_ok=True)
    with db.write() as s:
        ids = []
        for name, text in docs:
            data = text.encode("utf-8")
            f = kb_store.add_file(s, kb, name, len(data), hashlib.sha256(data).hexdigest(), [], {})
            kb_store.file_path(data_dir, f.id, name).write_bytes(data)
            ids.append(f.id)
        return kb_store.create_job(s, kb, ids).id


def padding(groups: list[list[str]]) -> dict[str, float]:
    """Token counts of the batches MiniLMEmbedder.embed forms when called once per group: real tokens,
    padded tokens (batch × width) and the attention proxy (batch × width²), relative to real."""
    from bailu.knowledge.minilm import _load

    _, tokenizer = _load(MiniLMEmbedder().threads)
    real = padded = quad = quad_real = 0
    for group in groups:
        lengths = sorted((len(e.ids) for e in tokenizer.encode_batch(group)), reverse=True)
        for start in range(0, len(lengths), BATCH_SIZE):
            batch = lengths[start : start + BATCH_SIZE]
            real += sum(batch)
            padded += len(batch) * batch[0]
            quad += len(batch) * batch[0] ** 2
            quad_real += sum(n * n for n in batch)
    return {"calls": len(groups), "real_tokens": real, "padded_over_real": round(padded / real, 3), "attention_over_real": round(quad / quad_real, 3)}


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, this process's CPU seconds)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def ingest(db: Database, data_dir: Path, ws: str, name: str, docs: list[tuple[str, str]], groups: int = 4) -> dict[str, Any]:
    """The documents are dealt into ``groups`` groups, each indexed by its own job. For each group,
    three passes over the same chunk texts, in an order that rotates from group to group (so that
    the shared machine's load drifting during the run falls on all three alike):

    * ``run_job`` — bailu's whole ingestion (parse, chunk, embed, store);
    * ``raw`` — ``MiniLMEmbedder().embed`` once over the group's chunk texts;
    * ``raw_per_file`` — ``MiniLMEmbedder().embed`` once per file, as run_job calls it.

    The chunk texts are made beforehand with bailu's own parse + chunk_blocks and checked
    against the rows run_job stored; its stored vectors are checked against the raw ones."""
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, name, chunk_size=CHUNK_SIZE, overlap=OVERLAP, structured=False, embedder=DEFAULT_EMBEDDER)
    methods = ("run_job", "raw", "raw_per_file")
    wall = {m: 0.0 for m in methods}
    cpu = {m: 0.0 for m in methods}
    group_ratios: list[float] = []
    all_texts: list[str] = []
    all_groups: list[list[str]] = []
    raw_vectors: list[np.ndarray] = []
    with StageClock() as clock:
        for g in range(groups):
            gdocs = docs[g::groups]
            if not gdocs:
                continue
            per_file: list[list[str]] = []
            for doc_name, text in gdocs:
                chunks = chunk_blocks(parse(text.encode("utf-8"), doc_name).blocks, CHUNK_SIZE, OVERLAP)  # not StageClock's wrappers
                per_file.append([f"{c.title or Path(doc_name).stem}\n{c.text}" for c in chunks])
            texts = [t for f in per_file for t in f]
            job = add_files(db, data_dir, kb, gdocs)
            runs: dict[str, Callable[[], Any]] = {
                "run_job": lambda job=job: run_job(db, data_dir, job),  # type: ignore[misc]
                "raw": lambda texts=texts: MiniLMEmbedder().embed(texts),  # type: ignore[misc]
                "raw_per_file": lambda per_file=per_file: [MiniLMEmbedder().embed(f) for f in per_file],  # type: ignore[misc]
            }
            this: dict[str, float] = {}
            for m in methods[g % 3 :] + methods[: g % 3]:
                out, w, c = timed(runs[m])
                if m == "run_job":
                    assert out, "the job was not run"
                if m == "raw":
                    raw_vectors.append(out)
                wall[m] += w
                cpu[m] += c
                this[m] = w
            group_ratios.append(round(this["raw"] / this["run_job"], 3))
            all_texts += texts
            all_groups += per_file
    with db.read() as s:
        rows = s.execute(
            select(KbChunk.id, KbChunk.file_id, KbChunk.title, KbChunk.text, KbChunk.vector).where(KbChunk.kb_id == kb.id).order_by(KbChunk.id)
        ).all()
        bad = [f.name for f in kb_store.list_files(s, kb.id) if f.index_status != "FINISH"]
    if bad:
        raise SystemExit(f"ingestion failed for {bad}")
    if [f"{r.title}\n{r.text}" for r in rows] != all_texts:
        raise SystemExit("the chunk texts made beforehand differ from run_job's")
    stored = np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows])
    stages = {k: round(v, 3) for k, v in clock.t.items()}
    stages["db_and_rest"] = round(wall["run_job"] - sum(clock.t.values()), 3)
    n = len(rows)
    return {
        "kb": kb, "rows": rows, "vectors": stored,
        "files": len(docs), "chars": sum(len(t) for _, t in docs), "chunks": n, "groups": len(group_ratios),
        "ingest_s": round(wall["run_job"], 3), "ingest_chunks_per_s": round(n / wall["run_job"], 2),
        "raw_embed_s": round(wall["raw"], 3), "raw_chunks_per_s": round(n / wall["raw"], 2),
        "raw_per_file_embed_s": round(wall["raw_per_file"], 3), "raw_per_file_chunks_per_s": round(n / wall["raw_per_file"], 2),
        "cpu_s": {m: round(v, 3) for m, v in cpu.items()},
        "ratio": round(wall["raw"] / wall["run_job"], 3),  # run_job's throughput as a fraction of the raw embedder's
        "ratio_per_group": group_ratios,
        "ratio_cpu": round(cpu["raw"] / cpu["run_job"], 3),
        "ratio_vs_per_file_raw": round(wall["raw_per_file"] / wall["run_job"], 3),
        "stages_s": stages,
        "max_abs_diff_stored_vs_raw": float(np.abs(stored - np.concatenate(raw_vectors)).max()),
        "padding": {"one_call_per_group": padding(_group_texts(all_groups, docs, groups)),
                    "per_file_calls": padding(all_groups)},
    }


def _group_texts(per_file: list[list[str]], docs: list[tuple[str, str]], groups: int) -> list[list[str]]:
    """The chunk texts of each group (per_file is in group order: group 0's files, then group 1's...)."""
    sizes = [len(docs[g::groups]) for g in range(groups)]
    out, i = [], 0
    for size in sizes:
        out.append([t for f in per_file[i : i + size] for t in f])
        i += size
    return [g for g in out if g]


# --- part 3: retrieval set ---------------------------------------------------------------------------

_EN_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_ZH_SENT = re.compile(r"(?<=[。！？；])|\n+")
_EN_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*$")
_ZH_CLAUSE = re.compile(r"[，、：；,;:（）()“”\"「」《》]+")


def en_query(sentence: str, rng: random.Random) -> str | None:
    words = [w.strip(".,;:!?()[]{}\"'`*_") for w in sentence.split()]
    if not 8 <= len(words) <= 40:
        return None
    plain = [w for w in words if _EN_WORD.match(w)]
    if len(plain) < 0.7 * len(words) or len(plain) < 7:
        return None
    kept = [w for w in plain if rng.random() >= 0.4]  # drop 40% of the words
    if len(kept) < 4:
        kept = rng.sample(plain, 4)
    for _ in range(2):  # two swaps of neighbours
        i = rng.randrange(len(kept) - 1)
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return " ".join(kept)


def zh_query(sentence: str, rng: random.Random) -> str | None:
    if len(CJK.findall(sentence)) < 12:
        return None
    only = re.sub(r"[^\u4e00-\u9fff，、：；,;:（）()“”\"「」《》]", "", sentence)  # Chinese characters only (no option names, no code)
    clauses = [c for c in _ZH_CLAUSE.split(only) if c]
    rng.shuffle(clauses)
    text = "".join(clauses)
    for _ in range(2):  # delete two random two-character spans
        if len(text) > 10:
            i = rng.randrange(len(text) - 1)
            text = text[:i] + text[i + 2 :]
    return text if len(text) >= 8 else None


def recall_set(rows: list[Any], lang: str, n: int, rng: random.Random) -> list[tuple[str, int, str]]:
    """(query, relevant chunk id, source sentence): one query per sampled chunk, from a sentence that
    occurs in that chunk and in no other chunk of the knowledge base."""
    texts = [r.text for r in rows]
    order = list(range(len(rows)))
    rng.shuffle(order)
    out = []
    for i in order:
        split = _EN_SENT if lang == "en" else _ZH_SENT
        candidates = [s.strip() for s in split.split(texts[i]) if s and s.strip()]
        rng.shuffle(candidates)
        for sent in candidates:
            q = en_query(sent, rng) if lang == "en" else zh_query(sent, rng)
            if q is None or sum(sent in t for t in texts) != 1:
                continue
            out.append((q, rows[i].id, sent))
            break
        if len(out) >= n:
            break
    return out


def mostly_cjk(query: str) -> bool:
    """Retriever's rule for leaving the dense list out (bailu.knowledge.retrieval.DENSE_MAX_CJK_SHARE,
    since commit dda206f); the same threshold, 0.3, where that rule is absent."""
    share = getattr(retrieval_mod, "DENSE_MAX_CJK_SHARE", 0.3)
    cjk = getattr(retrieval_mod, "_CJK", CJK)
    letters = len(re.findall(r"\w", query)) or 1
    return len(cjk.findall(query)) / letters > share


# Whether the Retriever under test leaves the dense list out for mostly-Chinese queries.
BAILU_ROUTES_CJK = hasattr(retrieval_mod, "DENSE_MAX_CJK_SHARE")


def fuse(lex: np.ndarray, dense: np.ndarray, *, method: str = "z", k: int = 60, candidates: int = 10, w_lex: float = 1.0, w_dense: float = 1.0,
         top_k: int = 5, cjk_query: bool = False, cjk_lexical_only: bool = False) -> list[int]:
    """Fusions of the two lists of one knowledge base without filters, with their knobs exposed:
    ``z`` (Retriever.retrieve's since this commit: mean of z-scores over each list's candidates; a
    chunk missing from the lexical list scores as BM25 0, one missing from the dense list as its
    last candidate) or ``rrf`` (reciprocal rank, Σ w / (k + rank), bailu's fusion before).
    ``cjk_lexical_only``: no dense list for a mostly-Chinese query, MiniLM being English-only."""
    if cjk_lexical_only and cjk_query:
        w_dense = 0.0
    lists: list[tuple[list[int], float, np.ndarray, float | None]] = [([int(i) for i in _top(lex, candidates) if lex[i] > 0], w_lex, lex, 0.0)]
    if w_dense > 0:
        lists.append(([int(i) for i in _top(dense, candidates)], w_dense, dense, None))
    fused: dict[int, float] = {}
    if method == "rrf":
        for ranked, w, _, _ in lists:
            for rank, i in enumerate(ranked):
                fused[i] = fused.get(i, 0.0) + w / (k + rank + 1)
    else:
        parts: list[tuple[dict[int, float], float, float]] = []
        for ranked, w, scores, floor in lists:
            if not ranked:
                parts.append(({}, 0.0, w))
                continue
            v = scores[ranked].astype(np.float64)
            mean, std = v.mean(), v.std()
            if std < 1e-9:
                parts.append(({i: 1.0 for i in ranked}, -1.0 if floor is not None else 0.0, w))
                continue
            z = (v - mean) / std
            parts.append((dict(zip(ranked, z)), (floor - mean) / std if floor is not None else z[-1], w))
        total = sum(w for _, _, w in parts)
        for i in {i for zs, _, _ in parts for i in zs}:
            fused[i] = sum(w * zs.get(i, missing) for zs, missing, w in parts) / total
    return [i for i, _ in sorted(fused.items(), key=lambda kv: -kv[1])[:top_k]]


# What-if fusions, computed from the same two score vectors. "bailu" re-implements the Retriever
# under test; its agreement with Retriever.retrieve is checked. They are not tuned on a held-out
# set: read them as sensitivity, not as a recommendation proven on real queries. (The z fusion's
# 10 candidates and equal weights were chosen on seed 0's sets and checked on seed 1's.)
VARIANTS: dict[str, dict[str, Any]] = {
    "bailu": {"cjk_lexical_only": BAILU_ROUTES_CJK},
    "z_c10_no_routing": {},
    "z_c20": {"candidates": 20, "cjk_lexical_only": True},
    "z_c100": {"candidates": 100, "cjk_lexical_only": True},
    "z_c10_wlex0.8": {"w_lex": 0.8, "cjk_lexical_only": True},
    "rrf_c100": {"method": "rrf", "candidates": 100, "cjk_lexical_only": True},
    "rrf_c20": {"method": "rrf", "candidates": 20, "cjk_lexical_only": True},
    "rrf_c10": {"method": "rrf", "candidates": 10, "cjk_lexical_only": True},
    "rrf_c100_no_routing": {"method": "rrf", "candidates": 100},
}


def summary_set(rows: list[Any], names: dict[str, str]) -> list[tuple[str, frozenset[int], str]]:
    """(package Summary, chunk ids of that package's METADATA description, file name): natural one-line
    queries written by the packages' authors; a Summary shared by two ingested files is left out."""
    by_file: dict[str, set[int]] = {}
    for r in rows:
        by_file.setdefault(r.file_id, set()).add(r.id)
    wanted = {fid: SUMMARIES[name] for fid, name in names.items() if name in SUMMARIES}
    counts: dict[str, int] = {}
    for summary in wanted.values():
        counts[summary.lower()] = counts.get(summary.lower(), 0) + 1
    return [(summary, frozenset(by_file[fid]), names[fid]) for fid, summary in sorted(wanted.items(), key=lambda kv: names[kv[0]])
            if counts[summary.lower()] == 1 and len(summary.split()) >= 3 and fid in by_file]


def evaluate(db: Database, kb: KnowledgeBase, queries: list[tuple[str, Any, str]]) -> dict[str, Any]:
    """Recall@5 / MRR@5: a query's relevant answer is one chunk id, or a set of them (any one counts)."""
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    retriever = Retriever()
    methods = ["lexical", "dense", "hybrid", *VARIANTS]
    hits: dict[str, list[bool]] = {m: [] for m in methods}
    rr: dict[str, list[float]] = {m: [] for m in methods}
    agree = 0
    with db.read() as s:
        kb = s.get(KnowledgeBase, kb.id)  # type: ignore[assignment]
        snap = retriever.snapshot(s, kb)
        assert snap.lexical is not None and snap.vectors is not None
        for q, relevant, _ in queries:
            relevant = relevant if isinstance(relevant, frozenset) else frozenset([relevant])
            qv = embedder.embed([q])[0]
            lex = snap.lexical.scores(q)
            dense = snap.vectors @ qv
            tops = {
                "lexical": [snap.chunk_ids[i] for i in _top(lex, 5) if lex[i] > 0],
                "dense": [snap.chunk_ids[i] for i in _top(dense, 5)],
                "hybrid": [h.chunk_id for h in retriever.retrieve(s, [kb], q, top_k=5)],
                **{name: [snap.chunk_ids[i] for i in fuse(lex, dense, cjk_query=mostly_cjk(q), **kw)] for name, kw in VARIANTS.items()},
            }
            agree += tops["hybrid"] == tops["bailu"]
            for name, top in tops.items():
                ranks = [n for n, cid in enumerate(top) if cid in relevant]
                hits[name].append(bool(ranks))
                rr[name].append(1.0 / (ranks[0] + 1) if ranks else 0.0)
    return {
        "queries": len(queries), "corpus_chunks": len(snap.chunk_ids),
        **{f"recall@5_{m}": round(sum(hits[m]) / len(hits[m]), 4) for m in ("lexical", "dense", "hybrid")},
        **{f"mrr@5_{m}": round(sum(rr[m]) / len(rr[m]), 4) for m in ("lexical", "dense", "hybrid")},
        "what_if_fusion_recall@5": {m: round(sum(hits[m]) / len(hits[m]), 4) for m in VARIANTS},
        "reimplementation_agrees_with_retriever": f"{agree}/{len(queries)}",
        "retriever_routes_cjk_queries_to_lexical": BAILU_ROUTES_CJK,
    }


# --- part 2: latency at scale ------------------------------------------------------------------------


def make_scale_kb(db: Database, ws: str, name: str, passages: list[tuple[str, str]], vectors: np.ndarray, per_file: int = 1000) -> KnowledgeBase:
    with db.write() as s:
        kb = kb_store.create_kb(s, ws, name, chunk_size=CHUNK_SIZE, overlap=OVERLAP, structured=False, embedder=DEFAULT_EMBEDDER)
        kb.revision = 1
        file_ids = []
        for j in range(0, len(passages), per_file):
            f = kb_store.add_file(s, kb, f"filler-{j // per_file:04d}.txt", 0, "0" * 64, [], {})
            f.status, f.index_status = "PARSE_SUCCESS", "FINISH"
            file_ids.append(f.id)
        kb_id = kb.id
    batch = 5000
    for start in range(0, len(passages), batch):
        with db.write() as s:
            s.execute(insert(KbChunk), [
                {"kb_id": kb_id, "file_id": file_ids[i // per_file], "seq": i % per_file, "title": passages[i][0], "text": passages[i][1],
                 "pages": [], "fields": None, "enabled": True, "vector": vectors[i].tobytes(), "tokens": chunk_tokens(*passages[i])}
                for i in range(start, min(start + batch, len(passages)))
            ])
    with db.read() as s:
        kb = s.get(KnowledgeBase, kb.id)  # type: ignore[assignment]
    return kb


def tiled_vectors(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.arange(n) % len(base)
    out = base[idx] + rng.standard_normal((n, base.shape[1]), dtype=np.float32) * NOISE_SIGMA
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def latency(db: Database, kb: KnowledgeBase, queries: list[str], profile: bool = False) -> dict[str, Any]:
    lexical_build = [0.0]
    real_index = retrieval_mod.LexicalIndex

    def timed_index(texts: list[str]) -> Any:
        t = time.perf_counter()
        try:
            return real_index(texts)
        finally:
            lexical_build[0] += time.perf_counter() - t

    retriever = Retriever()
    embedder = get_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    with db.read() as s:
        kb = s.get(KnowledgeBase, kb.id)  # type: ignore[assignment]
        retrieval_mod.LexicalIndex = timed_index  # type: ignore[misc,assignment]
        try:
            t = time.perf_counter()
            snap = retriever.snapshot(s, kb)
            cold = time.perf_counter() - t
        finally:
            retrieval_mod.LexicalIndex = real_index  # type: ignore[misc]
        assert snap.lexical is not None and snap.vectors is not None
        for q in queries[:10]:  # warm-up
            retriever.retrieve(s, [kb], q, top_k=5)
        warm = []
        for q in queries:
            t = time.perf_counter()
            retriever.retrieve(s, [kb], q, top_k=5)
            warm.append((time.perf_counter() - t) * 1000)
        # which queries the Retriever answers with both lists (since dda206f mostly-Chinese ones are lexical only)
        both = [not (BAILU_ROUTES_CJK and mostly_cjk(q)) for q in queries]
        # the stages of a warm query that uses both lists, timed one by one on the same queries
        stage: dict[str, list[float]] = {"embed_query": [], "lexical_scores": [], "dense_matvec": [], "top_candidates": []}
        keep = np.ones(len(snap.chunk_ids), dtype=bool)
        for q in (q for q, b in zip(queries, both, strict=True) if b):
            t0 = time.perf_counter()
            qv = embedder.embed([q])[0]
            t1 = time.perf_counter()
            lex = snap.lexical.scores(q)
            t2 = time.perf_counter()
            dense = np.where(keep, snap.vectors @ qv, -np.inf)
            t3 = time.perf_counter()
            _top(np.where(keep, lex, 0.0), 10)
            _top(dense, 10)
            t4 = time.perf_counter()
            for k, v in zip(stage, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stage[k].append(v * 1000)
        profiled = None
        if profile:
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for q in queries:
                retriever.retrieve(s, [kb], q, top_k=5)
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
            profiled = buf.getvalue()
    def stats(values: list[float], pick: bool | None = None) -> dict[str, float]:
        chosen = [v for v, b in zip(values, both, strict=True) if pick is None or b == pick]
        if not chosen:
            return {"n": 0}
        return {"n": len(chosen), "p50_ms": round(pct(chosen, 50), 2), "p90_ms": round(pct(chosen, 90), 2), "p99_ms": round(pct(chosen, 99), 2),
                "mean_ms": round(statistics.fmean(chosen), 2)}

    out = {
        "chunks": len(snap.chunk_ids), "cold_snapshot_s": round(cold, 2), "cold_lexical_index_s": round(lexical_build[0], 2),
        "queries": len(warm), **stats(warm, True),  # the headline: queries that run both lists (hybrid)
        "lexical_only_queries": stats(warm, False), "all_queries": stats(warm),
        "stage_p50_ms": {k: round(pct(v, 50), 2) for k, v in stage.items()},
    }
    if profiled:
        out["profile_top_tottime"] = profiled
    return out


# --- main -----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--filler", type=int, default=100_000, help="chunks of the large knowledge base (the small one has 10k)")
    ap.add_argument("--queries", type=int, default=300, help="queries per language for recall (at most)")
    ap.add_argument("--latency-queries", type=int, default=400, help="alternating en / zh queries of the retrieval sets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the ingested corpus sizes (a smoke run: 0.1)")
    ap.add_argument("--profile", action="store_true", help="cProfile the warm queries on the large knowledge base (printed to stderr)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    global EN_BUDGET, ZH_BUDGET
    EN_BUDGET, ZH_BUDGET = int(EN_BUDGET * args.scale), int(ZH_BUDGET * args.scale)

    started = time.perf_counter()
    rng = random.Random(args.seed)
    load = os.getloadavg()
    result: dict[str, Any] = {
        "bench": "knowledge", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(x, 2) for x in load], "seed": args.seed, "batch_size": BATCH_SIZE, "scale": args.scale,
    }
    with tempfile.TemporaryDirectory(prefix="bailu-kbbench-") as tmp:
        data_dir = Path(tmp)
        db = Database(f"sqlite:///{data_dir / 'bench.db'}")
        db.migrate()
        with db.write() as s:
            ws = ws_repo.ensure_default_workspace(s).id

        log("collecting documents")
        en_docs, zh_docs = english_docs(rng), chinese_docs(rng)
        embedder = get_embedder(DEFAULT_EMBEDDER)
        assert embedder is not None
        embedder.embed(["warm up the session"] * 40)  # load onnxruntime before any timing
        MiniLMEmbedder().embed(["warm up"])

        ing: dict[str, dict[str, Any]] = {}
        for lang, docs in (("en", en_docs), ("zh", zh_docs)):
            log(f"ingesting {len(docs)} {lang} documents ({sum(len(t) for _, t in docs)} chars)")
            ing[lang] = ingest(db, data_dir, ws, f"bench-{lang}", docs)
            d = ing[lang]
            log(f"  {d['chunks']} chunks: run_job {d['ingest_s']} s, raw embedder {d['raw_embed_s']} s, per file {d['raw_per_file_embed_s']} s")
        total_chunks = sum(v["chunks"] for v in ing.values())
        total_ing = sum(v["ingest_s"] for v in ing.values())
        total_raw = sum(v["raw_embed_s"] for v in ing.values())
        total_pf = sum(v["raw_per_file_embed_s"] for v in ing.values())
        result["ingestion"] = {
            **{lang: {k: v for k, v in d.items() if k not in ("kb", "rows", "vectors")} for lang, d in ing.items()},
            "all": {"chunks": total_chunks, "ingest_chunks_per_s": round(total_chunks / total_ing, 2),
                    "raw_chunks_per_s": round(total_chunks / total_raw, 2), "raw_per_file_chunks_per_s": round(total_chunks / total_pf, 2),
                    "ratio": round(total_raw / total_ing, 3), "ratio_vs_per_file_raw": round(total_pf / total_ing, 3)},
        }

        log("building the retrieval sets")
        sets = {lang: recall_set(ing[lang]["rows"], lang, args.queries, random.Random(args.seed + i)) for i, lang in enumerate(("en", "zh"))}
        result["recall"] = {}
        for lang in ("en", "zh"):
            log(f"recall {lang}: {len(sets[lang])} queries")
            result["recall"][lang] = {"documents": ing[lang]["files"], **evaluate(db, ing[lang]["kb"], sets[lang])}
        with db.read() as s:
            names = {f.id: f.name for f in kb_store.list_files(s, ing["en"]["kb"].id)}
        summaries = summary_set(ing["en"]["rows"], names)
        log(f"recall en-summary: {len(summaries)} queries")
        result["recall"]["en_summary"] = {"documents": ing["en"]["files"], "relevant": "any chunk of the package's METADATA description",
                                          **evaluate(db, ing["en"]["kb"], summaries)}
        result["recall"]["examples"] = {lang: [{"query": q, "from": src} for q, _, src in sets[lang][:3]] for lang in ("en", "zh")}

        log(f"collecting {args.filler} filler passages")
        exclude = {r.text for d in ing.values() for r in d["rows"]}
        passages = filler_passages(args.filler, random.Random(args.seed + 7), exclude)
        base = np.concatenate([ing["en"]["vectors"], ing["zh"]["vectors"]])
        vectors = tiled_vectors(base, args.filler, np.random.default_rng(args.seed))
        lat_queries = [q for pair in zip(sets["en"], sets["zh"]) for q, _, _ in pair][: args.latency_queries]
        result["latency"] = {"query_mix": "alternating en / zh queries of the retrieval set", "filler_base_vectors": len(base), "noise_sigma": NOISE_SIGMA}
        for size in sorted({min(10_000, args.filler), args.filler}):
            log(f"inserting a {size}-chunk knowledge base")
            t = time.perf_counter()
            kb = make_scale_kb(db, ws, f"scale-{size}", passages[:size], vectors[:size])
            insert_s = time.perf_counter() - t
            log(f"  inserted in {insert_s:.1f} s; cold snapshot + {len(lat_queries)} warm queries")
            result["latency"][str(size)] = {"insert_rows_s": round(insert_s, 2), **latency(db, kb, lat_queries, profile=args.profile and size == args.filler)}
            if "profile_top_tottime" in result["latency"][str(size)]:
                log("profile of the warm queries:\n" + result["latency"][str(size)]["profile_top_tottime"])
        db.dispose()

    big = result["latency"][str(args.filler)]
    en, zh = result["recall"]["en"], result["recall"]["zh"]
    result["targets"] = {
        "retrieval_p50_le_30ms_at_100k": big["p50_ms"] <= 30.0 if args.filler >= 100_000 else None,
        **{f"hybrid_ge_best_single_{lang}": r["recall@5_hybrid"] >= max(r["recall@5_lexical"], r["recall@5_dense"])
           for lang, r in (("en", en), ("zh", zh), ("en_summary", result["recall"]["en_summary"]))},
    }
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    report(result)
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    if not args.no_save:
        out = Path(__file__).parent / "results" / f"knowledge-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(line + "\n", encoding="utf-8")
        log(f"saved {out.relative_to(ROOT)}")


def report(r: dict[str, Any]) -> None:
    ing = r["ingestion"]
    print(f"\nknowledge benchmark — {r['cpus']} CPUs, load average at start {r['loadavg_at_start']}, {r['elapsed_s']} s\n")
    print("1. ingestion (chunk 500 / overlap 100, MiniLM, batch 32, SQLite), chunks/s")
    print(f"   {'':4} {'files':>5} {'chunks':>6} {'run_job':>8} {'raw 1call':>9} {'raw/file':>8} {'ratio':>6} {'ratio/file':>10}")
    for lang in ("en", "zh", "all"):
        d = ing[lang]
        print(f"   {lang:4} {d.get('files', ''):>5} {d['chunks']:>6} {d['ingest_chunks_per_s']:>8} {d['raw_chunks_per_s']:>9} {d['raw_per_file_chunks_per_s']:>8}"
              f" {d['ratio']:>6} {d['ratio_vs_per_file_raw']:>10}")
    for lang in ("en", "zh"):
        d = ing[lang]
        pad = d["padding"]
        print(f"   {lang}: run_job stages (s): " + "  ".join(f"{k}={v}" for k, v in d["stages_s"].items())
              + f"; ratio per group {d['ratio_per_group']}; CPU-time ratio {d['ratio_cpu']}")
        print(f"       padded/real tokens: one call per group {pad['one_call_per_group']['padded_over_real']}, per-file calls {pad['per_file_calls']['padded_over_real']}"
              f" (attention proxy {pad['one_call_per_group']['attention_over_real']} vs {pad['per_file_calls']['attention_over_real']})")
    print("\n2. retrieval latency, hybrid top_k=5 (warm: snapshot built)")
    print(f"   {'chunks':>7} {'cold build s':>12} {'(lexical s)':>11} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}   warm stage p50 (ms)   [queries using both lists]")
    for d in r["latency"].values():
        if isinstance(d, dict) and "p50_ms" in d:
            stages = "  ".join(f"{k}={v}" for k, v in d["stage_p50_ms"].items())
            print(f"   {d['chunks']:>7} {d['cold_snapshot_s']:>12} {d['cold_lexical_index_s']:>11} {d['p50_ms']:>7} {d['p90_ms']:>7} {d['p99_ms']:>7}   {stages}")
            lo = d["lexical_only_queries"]
            if lo.get("n"):
                print(f"   {'':>7} ({d['n']} queries using both lists; the {lo['n']} mostly-Chinese ones, lexical only: p50 {lo['p50_ms']} / p99 {lo['p99_ms']} ms)")
    print("\n3. recall@5 (MRR@5) on the mechanically derived retrieval sets")
    print(f"   {'':10} {'queries':>7} {'chunks':>6} {'lexical':>15} {'dense':>15} {'hybrid':>15}")
    for lang in ("en", "zh", "en_summary"):
        d = r["recall"][lang]
        cells = [f"{d[f'recall@5_{m}']:.3f} ({d[f'mrr@5_{m}']:.3f})" for m in ("lexical", "dense", "hybrid")]
        print(f"   {lang:10} {d['queries']:>7} {d['corpus_chunks']:>6} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}")
    for lang in ("en", "zh", "en_summary"):
        d = r["recall"][lang]
        print(f"   what-if fusion recall@5 {lang}: " + "  ".join(f"{k}={v:.3f}" for k, v in d["what_if_fusion_recall@5"].items())
              + f"  (bailu's fusion re-implemented = Retriever on {d['reimplementation_agrees_with_retriever']} queries)")
    print("\ntargets:", ", ".join(f"{k}={'met' if v else ('n/a' if v is None else 'NOT met')}" for k, v in r["targets"].items()))
    print()


if __name__ == "__main__":
    main()
