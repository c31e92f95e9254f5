"""Load test for a running ``mlx-specdec serve``: N streamed chat requests from C concurrent clients.

Loopback only, bounded in count (--requests <= 10000, --concurrency <= 64) and time (--time-limit).
Reports errors, throughput, latency to first token (p50/p95) and the server's resident memory after
the first 10 requests and at the end (from /proc/<pid>/status with --server-pid, else /health).

    python cli.py serve --method pld &          # in another terminal
    python scripts/serve_load.py --requests 100 --concurrency 4 --max-tokens 32 --method ar
    python scripts/serve_load.py --requests 100 --concurrency 4 --max-tokens 32 --method pld --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_specdec.prompts import default_prompt_file, read_prompts, select  # noqa: E402
from mlx_specdec.server.memory import resident_bytes  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RSS_AFTER = 10  # the first resident-memory reading: after this many requests


def one_request(client: httpx.Client, prompt: str, args) -> dict:
    """Stream one chat completion; returns its timings, token counts and outcome."""
    body = dict(messages=[{"role": "user", "content": prompt}], max_tokens=args.max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True})
    if args.method:
        body["method"] = args.method
    start = time.perf_counter()
    first, usage, done = None, None, False
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                return dict(error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return dict(error=f"stream error: {chunk['error']['message']}")
                if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - start
                usage = chunk.get("usage") or usage
    except httpx.HTTPError as e:
        return dict(error=f"{type(e).__name__}: {e}")
    if not done or usage is None:
        return dict(error="the stream ended without usage and [DONE]")
    return dict(ttft=first if first is not None else time.perf_counter() - start, latency=time.perf_counter() - start,
                tokens=usage["completion_tokens"], prompt_tokens=usage["prompt_tokens"], tau=usage["speculative"]["tau"],
                reused=usage["speculative"]["reused_tokens"], queued_s=usage["speculative"]["queued_s"],
                prefill_s=usage["speculative"]["prefill_s"], decode_tok_s=usage["speculative"]["tokens_per_s"])


def server_rss(client: httpx.Client, pid: int | None) -> int | None:
    if pid is not None:
        return resident_bytes(pid)
    return client.get("/health").json().get("rss_bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="The server (loopback only).")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--method", default=None, help="The request's method field (default: the server's).")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--server-pid", type=int, default=None, help="Read the server's RSS from /proc/PID/status.")
    parser.add_argument("--prompts", type=Path, default=None, help="Prompt JSONL (default: Spec-Bench dev beside the checkout, else the packaged set).")
    parser.add_argument("--time-limit", type=float, default=1800, help="Stop sending after this many seconds.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the summary and every request's row here.")
    args = parser.parse_args()
    if urlparse(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(sorted(LOOPBACK))}), got {args.url}")
    if not (1 <= args.requests <= 10000 and 1 <= args.concurrency <= 64):
        parser.error("--requests must be in 1..10000 and --concurrency in 1..64")

    prompts = [p.turns[0] for p in select(read_prompts([args.prompts or default_prompt_file()]))]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    rows: list[dict] = []
    lock = threading.Lock()
    next_index = iter(range(args.requests))
    rss: dict[str, int | None] = {}
    deadline = time.monotonic() + args.time_limit
    probe = httpx.Client(base_url=args.url, headers=headers, timeout=30)
    health = probe.get("/health").json()

    def client_loop():
        with httpx.Client(base_url=args.url, headers=headers, timeout=httpx.Timeout(600, connect=10)) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                row = dict(index=i, **one_request(client, prompts[i % len(prompts)], args))
                with lock:
                    rows.append(row)
                    if len(rows) == RSS_AFTER:
                        rss["after_10"] = server_rss(probe, args.server_pid)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    rss["end"] = server_rss(probe, args.server_pid)

    ok = [r for r in rows if "error" not in r]
    errors = [r for r in rows if "error" in r]
    ttft = np.array([r["ttft"] for r in ok]) if ok else np.zeros(1)
    tokens = sum(r["tokens"] for r in ok)
    summary = dict(
        url=args.url, server_model=health.get("model"), method=args.method or health.get("method"),
        requests=len(rows), not_sent=args.requests - len(rows), concurrency=args.concurrency, max_tokens=args.max_tokens,
        errors=len(errors), wall_s=round(wall, 2), completion_tokens=tokens,
        throughput_tok_s=round(tokens / wall, 2), requests_per_s=round(len(ok) / wall, 3),
        ttft_p50_s=round(float(np.percentile(ttft, 50)), 3), ttft_p95_s=round(float(np.percentile(ttft, 95)), 3),
        latency_p50_s=round(float(np.percentile([r["latency"] for r in ok] or [0], 50)), 3),
        tau_median=round(float(np.median([r["tau"] for r in ok] or [0])), 3),
        queued_p50_s=round(float(np.median([r["queued_s"] for r in ok] or [0])), 3),
        prefill_p50_s=round(float(np.median([r["prefill_s"] for r in ok] or [0])), 3),
        decode_tok_s_median=round(float(np.median([r["decode_tok_s"] for r in ok] or [0])), 2),
        rss_after_10_mib=round(rss["after_10"] / 2**20, 1) if rss.get("after_10") else None,
        rss_end_mib=round(rss["end"] / 2**20, 1) if rss.get("end") else None,
    )
    if summary["rss_after_10_mib"] and summary["rss_end_mib"]:
        summary["rss_growth_pct"] = round(100 * (summary["rss_end_mib"] / summary["rss_after_10_mib"] - 1), 2)
    for r in errors[:5]:
        print(f"error (request {r['index']}): {r['error']}", file=sys.stderr)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(dict(summary=summary, rows=sorted(rows, key=lambda r: r["index"])), indent=1))
    sys.exit(1 if errors or summary["not_sent"] else 0)


if __name__ == "__main__":
    main()
