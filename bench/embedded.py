"""Embedded-model benchmark (not a test): bailu's HTTP API versus llama-cpp-python in-process.

    python bench/embedded.py [--runs 5] [--max-tokens 128]

Measures, on the same prompt and sampling settings, in the same run:

* llama-cpp-python called directly in this process: time to first token and decode tokens/s;
* the same model behind ``bailu serve`` (the demo app, SSE, incremental output): time to
  the first frame carrying text, and tokens/s from the stream's own usage counts;
* 8 concurrent streams through bailu: all must finish without errors; how long each waited.

Only one of the two runs at a time (they share the machine's two cores). Everything is on
loopback; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short paragraph about the history of tea in China."
SYSTEM = "You are a helpful assistant. Answer briefly, in the language of the question."


def direct(runs: int, max_tokens: int) -> dict[str, float]:
    import llama_cpp

    from bailu.models import embedded

    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(embedded.ensure_model_file()), n_ctx=4096, n_threads=os.cpu_count() or 2, verbose=False)
    load_s = time.perf_counter() - t
    ttfts, rates = [], []
    for _ in range(runs):
        start = time.perf_counter()
        first = last = None
        n = 0
        for chunk in llm.create_chat_completion(
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
            max_tokens=max_tokens, temperature=0, stream=True,
        ):
            if chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
        assert first and last
        ttfts.append(first - start)
        rates.append((n - 1) / (last - first))
    llm.close()
    return {"load_s": load_s, "ttft_ms": statistics.median(ttfts) * 1000, "tokens_per_s": statistics.median(rates), "tokens": n}


async def one_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str], max_tokens: int) -> dict[str, float]:
    body = {"input": {"prompt": PROMPT}, "parameters": {"incremental_output": True, "temperature": 0}}
    start = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
        event = "result"
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:]
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "error":
                    raise RuntimeError(data)
                now = time.perf_counter()
                if data["output"].get("text"):
                    first = first or now
                    last = now
                tokens = data["usage"]["models"][0]["output_tokens"]
    assert first and last
    return {"ttff": first - start, "rate": (tokens - 1) / (last - first) if last > first else 0.0, "tokens": tokens, "total": last - start}


def through_bailu(runs: int, max_tokens: int, concurrent: int) -> dict[str, object]:
    data = Path(tempfile.mkdtemp(prefix="bailu-bench-"))
    env = {**os.environ, "BAILU_DATA_DIR": str(data)}
    bailu = [sys.executable, "-m", "bailu"]
    subprocess.run([*bailu, "init"], env=env, check=True, capture_output=True)
    subprocess.run([*bailu, "demo"], env=env, check=True, capture_output=True)
    info = json.loads((data / "demo.json").read_text())
    # the demo app answers with max_tokens 512; use the benchmark's own cap
    spec = data / "bench.yaml"
    spec.write_text(f"name: bench\ntype: agent\nmodel: default\ninstructions: {SYSTEM}\nparameters: {{max_tokens: {max_tokens}}}\n")
    app = subprocess.run([*bailu, "app", "create", "-f", str(spec), "--workspace", info["workspace_id"], "--publish"],
                         env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen([*bailu, "serve", "--port", str(port), "--log-level", "warning"], env=env)
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/v1/apps/{app}/completion"
        headers = {"Authorization": f"Bearer {info['api_key']}", "X-DashScope-WorkSpace": info["workspace_id"], "X-DashScope-SSE": "enable"}

        async def main() -> dict[str, object]:
            async with httpx.AsyncClient(timeout=600) as client:
                await one_stream(client, url, headers, max_tokens)  # loads the model
                singles = [await one_stream(client, url, headers, max_tokens) for _ in range(runs)]
                t = time.perf_counter()
                results = await asyncio.gather(*(one_stream(client, url, headers, max_tokens) for _ in range(concurrent)), return_exceptions=True)
                wall = time.perf_counter() - t
            ok = [r for r in results if isinstance(r, dict)]
            errors = [repr(r) for r in results if not isinstance(r, dict)]
            return {
                "ttff_ms": statistics.median(s["ttff"] for s in singles) * 1000,
                "tokens_per_s": statistics.median(s["rate"] for s in singles),
                "concurrent": {
                    "streams": concurrent, "ok": len(ok), "errors": errors, "wall_s": wall,
                    "first_frame_s": sorted(round(r["ttff"], 2) for r in ok),
                    "aggregate_tokens_per_s": sum(r["tokens"] for r in ok) / wall,
                },
            }

        return asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrent", type=int, default=8)
    args = ap.parse_args()
    d = direct(args.runs, args.max_tokens)
    b = through_bailu(args.runs, args.max_tokens, args.concurrent)
    ratio = b["tokens_per_s"] / d["tokens_per_s"]  # type: ignore[operator]
    added = b["ttff_ms"] - d["ttft_ms"]  # type: ignore[operator]
    print(f"direct llama-cpp-python: load {d['load_s']:.2f} s, first token {d['ttft_ms']:.0f} ms, {d['tokens_per_s']:.1f} tokens/s")
    print(f"through bailu (SSE):     first frame {b['ttff_ms']:.0f} ms, {b['tokens_per_s']:.1f} tokens/s")
    print(f"ratio tokens/s {ratio:.3f} (target >= 0.95)   added to first frame {added:+.0f} ms (target <= 50 ms)")
    c = b["concurrent"]
    print(f"{c['streams']} concurrent streams: {c['ok']} ok, {len(c['errors'])} errors, {c['wall_s']:.1f} s wall, "  # type: ignore[index]
          f"first frames at {c['first_frame_s']} s, {c['aggregate_tokens_per_s']:.1f} tokens/s in all")  # type: ignore[index]
    print(json.dumps({"direct": d, "bailu": b, "ratio": ratio, "added_ms": added}))


if __name__ == "__main__":
    main()
