#!/usr/bin/env python
"""bailu overhead benchmark: bailu versus a minimal pass-through proxy, both in
front of the same instant fake OpenAI upstream. A script run by hand, not a test:

    .venv/bin/python bench/overhead.py            # ~2.5 min; prints a table
    .venv/bin/python bench/overhead.py --quick    # a ~20 s smoke run

Everything runs on 127.0.0.1, each piece in its own process:

* the fake upstream (``bench/fake_upstream.py``, raw asyncio),
* ``bailu serve`` on a fresh temporary data directory (SQLite), set up with the
  real CLI (``bailu init``, ``bailu key create``, ``bailu app create --publish``),
* the baseline (``bench/baseline.py``, FastAPI + httpx, no DB, no auth),
* the load generator (this file, ``_loadgen`` sub-command): a small raw HTTP/1.1
  keep-alive client on uvloop, chosen because it costs far less CPU per request
  than httpx and the machine's cores are shared with the servers under test.

Phases (every request loop is bounded both in count and in time):

1. throughput: ``--concurrency`` clients (one keep-alive connection each) send
   non-stream calls for ``--duration`` s after ``--warmup`` s of warm-up;
2. latency: one client, ``--latency-calls`` sequential calls (after 50 warm-up
   calls) to bailu, the baseline, and the upstream directly; added latency is
   each proxy's percentile minus the upstream's;
3. streams: ``--streams`` concurrent SSE calls (one connection each) against the
   baseline and bailu; the upstream sends ``--stream-chunks`` chunks
   ``--stream-delay`` s apart, so the streams overlap; every stream must receive
   every frame with the right text and a final ``stop`` frame.

Besides wall-clock figures it reports the CPU time each process used per phase
(from /proc), i.e. CPU ms per call, which does not depend on how the cores were
shared. Results also go to ``bench/results/overhead-*.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from fake_upstream import STREAM_MARKER, expected_text

HOST = "127.0.0.1"
CHUNKS = 5  # content chunks per instant upstream answer
CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT = 30.0
MAX_REQUESTS = 1_000_000  # hard count bound on any request loop


# --------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 client (keep-alive, Content-Length or chunked bodies)
# --------------------------------------------------------------------------------------------


def build_request(path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def iter_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]):
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        if n:
            yield await reader.readexactly(n)
        return
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return
            yield (await reader.readexactly(size + 2))[:-2]
    while data := await reader.read(65536):  # until the server closes
        yield data


class Conn:
    """One keep-alive connection; reconnects after an error or ``Connection: close``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        try:
            reader, writer = await self._ensure()
            writer.write(raw)
            status, headers = await read_head(reader)
            body = b"".join([part async for part in iter_body(reader, headers)])
            if headers.get(b"connection", b"").lower() == b"close":
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process: ``overhead.py _loadgen SPEC_JSON``)
# --------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Percentile (nearest rank) of a list of seconds, in ms."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))
    return s[k] * 1000


def summary(lat: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99), "max_ms": pct(lat, 100),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan")}


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class CpuMeter:
    """CPU seconds used by the watched processes (and this one), and how busy the machine was,
    between ``start()`` and ``stop()``."""

    def __init__(self, watch: dict[str, int]) -> None:
        self.watch = watch

    def _sample(self) -> tuple[dict[str, float], tuple[float, float]]:
        cpu = {name: proc_cpu(pid) for name, pid in self.watch.items()}
        cpu["loadgen"] = _cpu_self()
        return cpu, machine_busy()

    def start(self) -> None:
        self.t0 = self._sample()
        self.wall0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        (cpu0, (b0, t0)), (cpu1, (b1, t1)) = self.t0, self._sample()
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        # CPU used by processes that are not part of the benchmark (another job on the machine)
        other = max(0.0, (b1 - b0) / CLK_TCK - sum(cpu.values()))
        return {"cpu_s": cpu, "machine_busy": (b1 - b0) / max(1, t1 - t0), "other_cpu_s": other,
                "window_s": time.perf_counter() - self.wall0}


async def phase_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    raw = spec["request"].encode("latin-1")
    check = spec["check"].encode()
    conc, warmup, duration = spec["concurrency"], spec["warmup"], spec["duration"]
    t0 = time.perf_counter()
    t_measure, t_end = t0 + warmup, t0 + warmup + duration
    lat: list[float] = []
    errors: list[str] = []
    warm_errors: list[str] = []
    issued = 0
    meter = CpuMeter(spec["watch"])
    window: dict[str, Any] = {}

    async def worker() -> None:
        nonlocal issued
        conn = Conn(spec["port"])
        try:
            while issued < MAX_REQUESTS:
                start = time.perf_counter()
                if start >= t_end:
                    return
                issued += 1
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        status, body = await conn.request(raw)
                    ok = status == 200 and check in body
                    err = None if ok else f"HTTP {status}: {body[:200]!r}"
                except Exception as exc:  # noqa: BLE001 - counted
                    err = f"{type(exc).__name__}: {exc}"
                end = time.perf_counter()
                if start >= t_measure and end <= t_end:
                    if err is None:
                        lat.append(end - start)
                    else:
                        errors.append(err)
                elif err is not None:
                    warm_errors.append(err)
        finally:
            conn.close()

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        meter.start()
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        window.update(meter.stop())

    marker = asyncio.ensure_future(mark_cpu())
    await asyncio.gather(*(worker() for _ in range(conc)))
    await marker
    return {"ok": len(lat), "errors": len(errors), "warmup_errors": len(warm_errors),
            "error_samples": (errors + warm_errors)[:5], "seconds": duration,
            "rps": len(lat) / duration, "latency": summary(lat), **window}


async def phase_latency(spec: dict[str, Any]) -> dict[str, Any]:
    raw = spec["request"].encode("latin-1")
    check = spec["check"].encode()
    conn = Conn(spec["port"])
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + spec["max_seconds"]
    meter = CpuMeter(spec["watch"])
    try:
        for i in range(spec["warmup_calls"] + spec["calls"]):
            if i == spec["warmup_calls"]:
                meter.start()
            if time.perf_counter() > deadline:
                errors.append("time bound reached")
                break
            start = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, body = await conn.request(raw)
                err = None if status == 200 and check in body else f"HTTP {status}: {body[:200]!r}"
            except Exception as exc:  # noqa: BLE001 - counted
                err = f"{type(exc).__name__}: {exc}"
            end = time.perf_counter()
            if i >= spec["warmup_calls"]:
                if err is None:
                    lat.append(end - start)
                else:
                    errors.append(err)
    finally:
        conn.close()
    return {"ok": len(lat), "errors": len(errors), "error_samples": errors[:5], "latency": summary(lat), **meter.stop()}


async def phase_streams(spec: dict[str, Any]) -> dict[str, Any]:
    raw = spec["request"].encode("latin-1")
    n, n_chunks = spec["streams"], spec["stream_chunks"]
    want_text = expected_text(n_chunks)
    ttff: list[float] = []
    durations: list[float] = []
    errors: list[str] = []
    frames_total = 0
    meter = CpuMeter(spec["watch"])
    meter.start()
    start_all = time.perf_counter()

    async def one() -> None:
        nonlocal frames_total
        conn = Conn(spec["port"])
        start = time.perf_counter()
        first: float | None = None
        payloads: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(spec["timeout"]):
                reader, writer = await conn._ensure()
                writer.write(raw)
                status, headers = await read_head(reader)
                if status != 200:
                    body = b"".join([p async for p in iter_body(reader, headers)])
                    raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
                buf = b""
                async for part in iter_body(reader, headers):
                    buf += part
                    while b"\n\n" in buf:
                        frame, buf = buf.split(b"\n\n", 1)
                        event, data = b"result", None
                        for line in frame.split(b"\n"):
                            if line.startswith(b"event:"):
                                event = line[6:].strip()
                            elif line.startswith(b"data:"):
                                data = line[5:]
                        if data is None:
                            continue  # comment / keep-alive
                        if event != b"result":
                            raise RuntimeError(f"event {event!r}: {data[:200]!r}")
                        if first is None:
                            first = time.perf_counter()
                        payloads.append(json.loads(data))
            texts = [p["output"]["text"] for p in payloads]
            finishes = [p["output"]["finish_reason"] for p in payloads]
            if len(payloads) != n_chunks + 1 or finishes[-1] != "stop" or "".join(texts) != want_text:
                raise RuntimeError(f"incomplete stream: {len(payloads)} frames, finish {finishes[-1:]}, "
                                   f"text {''.join(texts)[:60]!r}")
            frames_total += len(payloads)
            ttff.append(first - start)  # type: ignore[operator]
            durations.append(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - counted
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    await asyncio.gather(*(one() for _ in range(n)))
    total = time.perf_counter() - start_all
    window = meter.stop()
    return {"streams": n, "completed": len(durations), "errors": len(errors), "error_samples": errors[:5],
            "frames": frames_total, "expected_frames": n * (n_chunks + 1),
            "total_s": total, "first_frame": summary(ttff), "stream_duration": summary(durations), **window}


def loadgen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    fn = {"throughput": phase_throughput, "latency": phase_latency, "streams": phase_streams}[spec["phase"]]
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    result = run(fn(spec))
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Procs:
    """Child processes started here; stopped by pid at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.logdir / f"{name}.log", "wb") as log:  # the child keeps its own copy of the fd
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                 cwd=self.logdir)
        self.procs[name] = p
        return p

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def tail(self, name: str, n: int = 30) -> str:
        with suppress(OSError):
            return "\n".join((self.logdir / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        return ""


def wait_ready(name: str, port: int, path: str, proc: subprocess.Popen, procs: Procs, timeout: float = 30) -> None:
    req = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()

    async def probe() -> int:
        conn = Conn(port)
        try:
            async with asyncio.timeout(2):
                return (await conn.request(req))[0]
        finally:
            conn.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{procs.tail(name)}")
        with suppress(OSError, asyncio.TimeoutError, ValueError, asyncio.IncompleteReadError):
            if asyncio.run(probe()) == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become ready on port {port} within {timeout}s:\n{procs.tail(name)}")


def bailu_cli() -> list[str]:
    exe = Path(sys.executable).with_name("bailu")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bailu")
    return [found] if found else [sys.executable, "-m", "bailu"]


def cli(argv: list[str], env: dict[str, str]) -> str:
    r = subprocess.run(bailu_cli() + argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(f"bailu {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout.strip().splitlines()[-1].strip()


def setup_bailu(data_dir: Path, upstream_port: int, env: dict[str, str]) -> tuple[str, str]:
    data_dir.mkdir(parents=True)
    (data_dir / "bailu.toml").write_text(
        "[models.bench]\n"
        'provider = "openai"\n'
        f'base_url = "http://{HOST}:{upstream_port}/v1"\n'
        'model = "fake"\n'
    )
    spec = data_dir / "spec.yaml"
    spec.write_text("name: bench\ntype: agent\nmodel: bench\ninstructions: You are helpful.\n")
    d = ["--data-dir", str(data_dir)]
    cli(["init", *d], env)
    key = cli(["key", "create", *d], env)
    app_id = cli(["app", "create", "-f", str(spec), "--publish", *d], env)
    return key, app_id


def run_phase(spec: dict[str, Any], watch: dict[str, int], timeout: float) -> dict[str, Any]:
    """Run one load-generator phase in a fresh process."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_loadgen", json.dumps({**spec, "watch": watch})],
                       capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise SystemExit(f"load generator failed ({r.returncode}):\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def py_spy() -> str:
    exe = Path(sys.executable).with_name("py-spy")
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    return found


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bailu", "fastapi", "starlette", "uvicorn", "httptools", "uvloop", "httpx", "sqlalchemy"):
        with suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    with suppress(Exception):
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "bailu"], capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
        out["bailu_commit"] = commit + ("+uncommitted changes in bailu/" if dirty else "")
    with suppress(Exception):
        import importlib.util

        spec = importlib.util.find_spec("bailu")
        where = Path(spec.origin).resolve().parent.parent  # type: ignore[union-attr,arg-type]
        if where != ROOT:  # e.g. PYTHONPATH points at another copy: the commit above says nothing about it
            out["bailu_commit"] = f"imported from {where}"
    return out


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description="bailu overhead benchmark (see the module docstring)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per throughput run")
    ap.add_argument("--rounds", type=int, default=3, help="throughput runs per target (baseline and bailu alternate)")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each throughput run")
    ap.add_argument("--latency-calls", type=int, default=500)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--stream-chunks", type=int, default=20)
    ap.add_argument("--stream-delay", type=float, default=0.05, help="seconds between upstream chunks in streams")
    ap.add_argument("--phases", default="throughput,latency,streams",
                    help="comma-separated subset of throughput,latency,streams")
    ap.add_argument("--quick", action="store_true", help="short smoke run (3 s runs, 100 calls, 100 streams)")
    ap.add_argument("--profile", metavar="FILE",
                    help="py-spy record bailu during its throughput run (.svg flame graph, .txt collapsed stacks, "
                         ".json speedscope); sampling slows bailu, so do not quote figures from such a run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, bailu.db)")
    ap.add_argument("--json", metavar="FILE", help="results file (default bench/results/overhead-TIME.json)")
    a = ap.parse_args()
    if a.quick:
        a.duration, a.warmup, a.latency_calls, a.streams, a.rounds = 3.0, 1.0, 100, 100, 1

    nofile = raise_nofile()
    if nofile < a.streams * 4 + 100:
        raise SystemExit(f"open-file limit {nofile} is too low for {a.streams} streams; raise `ulimit -n`")

    b0, t0 = machine_busy()
    time.sleep(2)
    b1, t1 = machine_busy()
    background = (b1 - b0) / max(1, t1 - t0)
    if background > 0.1:
        print(f"warning: the machine is already {background:.0%} busy before the benchmark starts; "
              "figures will be low and noisy", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="bailu-bench-"))
    procs = Procs(tmp)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("BAILU_DATABASE_URL", None)
    env["BAILU_DATA_DIR"] = str(tmp / "data")
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(), "cpu": cpu_model(),
        "versions": versions(), "nofile": nofile, "background_busy": background,
        "settings": {k: v for k, v in vars(a).items() if k not in ("json", "keep", "profile")},
    }
    py = sys.executable
    try:
        # -- processes ----------------------------------------------------------------------
        up_port, bailu_port, base_port = free_port(), free_port(), free_port()
        upstream = procs.start("upstream", [py, str(HERE / "fake_upstream.py"), "--port", str(up_port),
                                            "--chunks", str(CHUNKS), "--stream-chunks", str(a.stream_chunks),
                                            "--stream-delay", str(a.stream_delay)], env)
        wait_ready("upstream", up_port, "/health", upstream, procs)
        key, app_id = setup_bailu(tmp / "data", up_port, env)
        bailu = procs.start("bailu", bailu_cli() + ["serve", "--data-dir", str(tmp / "data"), "--port",
                                                    str(bailu_port), "--log-level", "warning"], env)
        baseline = procs.start("baseline", [py, str(HERE / "baseline.py"), "--port", str(base_port), "--upstream",
                                            f"http://{HOST}:{up_port}/v1"], env)
        wait_ready("bailu", bailu_port, "/healthz", bailu, procs)
        wait_ready("baseline", base_port, "/healthz", baseline, procs)
        watch = {"upstream": upstream.pid, "bailu": bailu.pid, "baseline": baseline.pid}

        # -- requests -----------------------------------------------------------------------
        path = f"/api/v1/apps/{app_id}/completion"
        ds_body = json.dumps({"input": {"prompt": "Say something."}, "parameters": {}}).encode()
        stream_body = json.dumps({"input": {"prompt": f"{STREAM_MARKER.decode()} Say something."},
                                  "parameters": {"incremental_output": True}}).encode()
        oa_body = json.dumps({"model": "fake", "stream": True, "stream_options": {"include_usage": True},
                              "messages": [{"role": "system", "content": "You are helpful."},
                                           {"role": "user", "content": "Say something."}]}).encode()
        auth = {"Authorization": f"Bearer {key}"}
        sse = {"X-DashScope-SSE": "enable", "Accept": "text/event-stream"}
        text_check = json.dumps(expected_text(CHUNKS))[1:-1]  # as it appears inside the JSON body
        # requests travel to the load generator as JSON: bytes as latin-1 text
        targets: dict[str, dict[str, Any]] = {
            "upstream": {"port": up_port, "check": "[DONE]",
                         "request": build_request("/v1/chat/completions", up_port, oa_body, {}).decode("latin-1")},
            "baseline": {"port": base_port, "check": text_check,
                         "request": build_request(path, base_port, ds_body, {}).decode("latin-1")},
            "bailu": {"port": bailu_port, "check": text_check,
                      "request": build_request(path, bailu_port, ds_body, auth).decode("latin-1")},
        }
        stream_requests = {
            "baseline": build_request(path, base_port, stream_body, sse).decode("latin-1"),
            "bailu": build_request(path, bailu_port, stream_body, {**auth, **sse}).decode("latin-1"),
        }

        def say(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

        say(f"bench dir {tmp}; upstream :{up_port}, bailu :{bailu_port}, baseline :{base_port}")

        phases = set(a.phases.split(","))
        # 1. throughput: the upstream once, then baseline and bailu alternately, --rounds times
        results["throughput"] = {}
        rounds: list[dict[str, dict[str, Any]]] = []
        order = [("upstream", 0)] + [(name, i) for i in range(a.rounds) for name in ("baseline", "bailu")]
        for name, i in order if "throughput" in phases else ():
            say(f"throughput: {name}, {a.concurrency} clients, {a.warmup:g}+{a.duration:g} s"
                + (f" (round {i + 1}/{a.rounds})" if name != "upstream" else ""))
            spy = None
            if a.profile and name == "bailu" and i == 0:
                fmt = {".txt": "raw", ".json": "speedscope"}.get(Path(a.profile).suffix, "flamegraph")
                spy = subprocess.Popen([py_spy(), "record", "-p", str(bailu.pid), "-o", a.profile, "-r", "200",
                                        "-f", fmt, "-d", str(int(a.warmup + a.duration)), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spec = {"phase": "throughput", **targets[name], "concurrency": a.concurrency,
                    "warmup": a.warmup, "duration": a.duration}
            res = run_phase(spec, watch, timeout=a.warmup + a.duration + 120)
            if spy is not None:
                spy.wait(timeout=60)
            if name == "upstream":
                results["throughput"][name] = res
            else:
                if len(rounds) <= i:
                    rounds.append({})
                rounds[i][name] = res
        if rounds:
            # per target, the round with the median calls/s stands for it; the ratio is the median of the
            # per-round ratios (baseline and bailu measured back to back, so machine drift mostly cancels)
            for name in ("baseline", "bailu"):
                ranked = sorted((rnd[name] for rnd in rounds), key=lambda t: t["rps"])
                results["throughput"][name] = {**ranked[(len(ranked) - 1) // 2],
                                               "rps_rounds": [rnd[name]["rps"] for rnd in rounds]}
            results["throughput_ratio_rounds"] = [rnd["bailu"]["rps"] / rnd["baseline"]["rps"] for rnd in rounds]
            results["throughput_ratio"] = statistics.median(results["throughput_ratio_rounds"])

        # 2. latency at one client
        results["latency"] = {}
        for name in ("upstream", "baseline", "bailu") if "latency" in phases else ():
            say(f"latency: {name}, 1 client, {a.latency_calls} calls")
            spec = {"phase": "latency", **targets[name], "calls": a.latency_calls, "warmup_calls": 50,
                    "max_seconds": 120}
            results["latency"][name] = run_phase(spec, watch, timeout=180)

        # 3. concurrent streams
        results["streams"] = {}
        for name in ("baseline", "bailu") if "streams" in phases else ():
            say(f"streams: {name}, {a.streams} concurrent SSE streams x {a.stream_chunks} chunks")
            spec = {"phase": "streams", "port": targets[name]["port"],
                    "request": stream_requests[name],
                    "streams": a.streams, "stream_chunks": a.stream_chunks, "timeout": 120}
            results["streams"][name] = run_phase(spec, watch, timeout=240)
            time.sleep(1)

        for name, p in procs.procs.items():
            if p.poll() is not None:
                raise SystemExit(f"{name} died during the run:\n{procs.tail(name)}")
    finally:
        procs.stop_all()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report(results)
    out = Path(a.json) if a.json else HERE / "results" / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}")


def report(r: dict[str, Any]) -> None:
    tp, lat, st = r["throughput"], r["latency"], r["streams"]
    s = r["settings"]
    print(f"\nmachine: {r['cores']} cores, {r['cpu']}; python {r['versions']['python']}; "
          f"bailu {r['versions'].get('bailu_commit', '?')}")
    if tp:
        print(f"\nNon-stream throughput, {s['concurrency']} concurrent clients, {s['duration']:g} s per run, "
              f"{s['rounds']} round(s); the row is the median round")
        print(f"  {'target':<10}{'calls/s':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'CPU ms/call: server':>21}{'upstream':>10}{'loadgen':>9}{'machine busy':>14}")
        for name, t in tp.items():
            per = {k: v / max(1, t["ok"]) * 1000 for k, v in t["cpu_s"].items()}
            server = f"{per[name]:.2f}" if name != "upstream" else "-"
            print(f"  {name:<10}{t['rps']:>9.0f}{t['errors']:>8}{t['latency']['p50_ms']:>9.2f}"
                  f"{t['latency']['p99_ms']:>9.2f}{server:>21}{per['upstream']:>10.2f}{per['loadgen']:>9.2f}"
                  f"{t['machine_busy']:>13.0%}")
        if "throughput_ratio" in r:
            for name in ("baseline", "bailu"):
                print(f"  {name} calls/s per round: {', '.join(f'{x:.0f}' for x in tp[name]['rps_rounds'])}")
            ratio = r["throughput_ratio"]
            print(f"  bailu / baseline throughput: {ratio:.2f} (median of rounds: "
                  f"{', '.join(f'{x:.2f}' for x in r['throughput_ratio_rounds'])}; "
                  f"target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")

    if lat:
        print(f"\nLatency, 1 client, {s['latency_calls']} calls (added = minus the upstream called directly)")
        print(f"  {'target':<10}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'errors':>8}")
        up = lat["upstream"]["latency"]
        for name, t in lat.items():
            l_ = t["latency"]
            add = ("", "") if name == "upstream" else (f"{l_['p50_ms'] - up['p50_ms']:.2f}",
                                                      f"{l_['p99_ms'] - up['p99_ms']:.2f}")
            print(f"  {name:<10}{l_['p50_ms']:>9.2f}{l_['p99_ms']:>9.2f}{add[0]:>11}{add[1]:>11}{t['errors']:>8}")

    if st:
        print(f"\nConcurrent SSE streams: {s['streams']} at once, {s['stream_chunks']} upstream chunks "
              f"{s['stream_delay']:g} s apart (>= {s['stream_chunks'] * s['stream_delay']:.1f} s per stream)")
        print(f"  {'target':<10}{'completed':>10}{'errors':>8}{'frames':>14}{'total s':>9}"
              f"{'1st frame p50/p99 ms':>22}{'server CPU s':>14}")
        for name, t in st.items():
            ff = t["first_frame"]
            print(f"  {name:<10}{t['completed']:>10}{t['errors']:>8}{t['frames']:>7}/{t['expected_frames']:<6}"
                  f"{t['total_s']:>9.2f}{ff['p50_ms']:>11.0f} / {ff['p99_ms']:<8.0f}{t['cpu_s'][name]:>12.2f}")
        ok = st["bailu"]["errors"] == 0 and st["bailu"]["completed"] == s["streams"]
        print(f"  bailu: {st['bailu']['completed']}/{s['streams']} streams complete, {st['bailu']['errors']} errors "
              f"(target: all complete, 0 errors: {'met' if ok else 'NOT met'})")

    for section in (tp, lat, st):
        for name, t in section.items():
            for e in t.get("error_samples") or []:
                print(f"  error sample ({name}): {e}")
    noisy = [f"{ph} {name} ({t['other_cpu_s'] / t['window_s']:.0%} of a core)"
             for ph, section in (("throughput", tp), ("latency", lat), ("streams", st)) for name, t in section.items()
             if t["other_cpu_s"] > 0.25 and t["other_cpu_s"] / max(1e-9, t["window_s"]) > 0.1]
    if r["background_busy"] > 0.1 or noisy:
        print(f"\nWARNING: other processes used CPU during the run (before: {r['background_busy']:.0%} busy; "
              f"during: {', '.join(noisy) or '-'}); rerun on a quiet machine.")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2])
    else:
        main()
