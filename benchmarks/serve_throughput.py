"""``nerft serve`` on the real model under 64 concurrent one-sentence clients: requests/s, latency, memory (issue 26).

    python -m benchmarks.serve_throughput --server "transformers=--model RUN" \\
        --server "ct2-int8=--model EXPORT --backend ct2 --no-constrained"

Each ``--server NAME=FLAGS`` is started in turn (``nerft serve FLAGS`` on 127.0.0.1, ``--threads`` OpenMP threads),
measured alone, and stopped. The texts are the seeded CCFBDCI test split's, one per request, in order, cycling.

1. saturation (closed loop): ``--clients`` clients each send a request as soon as their last one is answered, for
   ``--seconds``: requests/s and latency p50/p95/p99 when 64 callers wait on the server at once.
2. latency bound (open loop): requests arrive at a fixed rate (Poisson, seed 0) for ``--seconds``, at most
   ``--clients`` in flight; rates at ``--rate-shares`` of the saturated requests/s. ``rps_at_p95_1s``: the highest
   rate tried whose p95 latency stayed <= ``--p95`` seconds (0 when none did).

3. idle latency: ``--idle`` sentences one at a time, each sent when the last is answered (p50/p95).
4. one request holding the first ``--request-texts`` texts, alone on the server.

Baseline in the same run, on the same texts: the bulk path (``benchmarks.bulk_rate``: what ``nerft predict --input``
does once the model is loaded) with the server's model flags (serve-only flags dropped), on the ``--texts-limit``
texts the clients send and on the request's texts. ``vs_bulk``: saturated requests/s over the bulk path's
documents/s (one text per request); ``request_vs_bulk``: the request's seconds over the bulk path's on its texts.

The server's resident memory is sampled every 0.25 s (``peak_rss_gb``, model load included). Writes
``serve_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from .common import RESULTS, WORK, log, markdown_table, prepare_ccfbdci, read_jsonl, write_results
from .serve_load import RssSampler, free_port, others_running, wait_ready


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def post(client: httpx.AsyncClient, text: str, key: str) -> tuple[int | str, float]:
    t0 = time.monotonic()
    try:
        r = await client.post("/v1/ner", json={"texts": [text]}, headers={"authorization": f"Bearer {key}"})
        status: int | str = r.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - t0


def summary(records: list[tuple[int | str, float]], seconds: float) -> dict:
    ok = [t for s, t in records if s == 200]
    return {"requests": len(records), "ok": len(ok), "rps": round(len(ok) / seconds, 2),
            "p50_s": round(percentile(ok, 0.5), 3), "p95_s": round(percentile(ok, 0.95), 3),
            "p99_s": round(percentile(ok, 0.99), 3)}


def http_client(url: str, clients: int) -> httpx.AsyncClient:
    """One connection per client, kept alive; a request may wait minutes on a loaded server."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    return httpx.AsyncClient(base_url=url, timeout=600, limits=limits)


async def closed_loop(url: str, key: str, texts: list[str], clients: int, seconds: float) -> dict:
    records: list[tuple[int | str, float]] = []
    counter = iter(range(10**9))
    end = time.monotonic() + seconds
    async with http_client(url, clients) as client:
        async def caller() -> None:
            while time.monotonic() < end:
                records.append(await post(client, texts[next(counter) % len(texts)], key))

        start = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(clients)))
        elapsed = time.monotonic() - start
    return summary(records, elapsed)


async def open_loop(url: str, key: str, texts: list[str], clients: int, rate: float, seconds: float) -> dict:
    rng = random.Random(0)
    records: list[tuple[int | str, float]] = []
    slots = asyncio.Semaphore(clients)
    async with http_client(url, clients) as client:
        async def one(text: str, arrived: float) -> None:
            async with slots:  # a request waiting for a free client counts its wait in its latency
                status, _ = await post(client, text, key)
            records.append((status, time.monotonic() - arrived))

        tasks, start, i = [], time.monotonic(), 0
        next_at = start
        while next_at < start + seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(texts[i % len(texts)], next_at)))
            i += 1
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    return {"rate": round(rate, 2), **summary(records, elapsed)}


SERVE_ONLY = {"--scheduler", "--max-batch-tokens", "--max-wait-ms", "--queue-size", "--timeout", "--max-texts",
              "--max-batch-chars"}  # flags nerft predict does not take (each with a value)


def bulk_flags(flags: str) -> list[str]:
    words, out = shlex.split(flags), []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w.split("=", 1)[0] in SERVE_ONLY:
            skip = "=" not in w
            continue
        out.append(w)
    return out


def measure_bulk(flags: str, texts_file: Path, sizes: list[int], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "benchmarks.bulk_rate", "--texts", str(texts_file),
           "--sizes", ",".join(map(str, sizes)), "--", *bulk_flags(flags)]
    log("$ " + " ".join(cmd[2:]))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bulk baseline failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


async def idle_latency(url: str, key: str, texts: list[str], n: int) -> dict:
    records = []
    async with http_client(url, 1) as client:
        for text in texts[:n]:
            records.append(await post(client, text, key))
    return summary(records, sum(t for _, t in records) or 1.0)


async def one_request(url: str, key: str, texts: list[str]) -> float:
    async with http_client(url, 1) as client:
        t0 = time.monotonic()
        r = await client.post("/v1/ner", json={"texts": texts}, headers={"authorization": f"Bearer {key}"})
        seconds = time.monotonic() - t0
    if r.status_code != 200:
        raise SystemExit(f"a request of {len(texts)} texts failed: {r.status_code} {r.text[:300]}")
    return seconds


@contextlib.contextmanager
def started_server(name: str, flags: str, threads: int, work: Path, texts: list[str]) -> Iterator[dict]:
    """``nerft serve FLAGS`` on a free loopback port with a fresh API key, ready and warmed up (a few requests of
    ``texts``); yields ``{"proc", "url", "key", "ready_s", "rss"}`` (``rss``: its resident memory, sampled from
    the start, model load included) and stops the server afterwards. Its log: ``work/NAME.log``."""
    port, key = free_port(), secrets.token_hex(8)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NERFT_API_KEY": key, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "nerft", "-q", "serve", *shlex.split(flags), "--host", "127.0.0.1", "--port",
           str(port)]
    log_file = work / f"{name}.log"
    log("$ " + " ".join(cmd[2:]))
    proc = subprocess.Popen(cmd, env=env, stdout=log_file.open("w"), stderr=subprocess.STDOUT)
    rss = RssSampler(proc.pid)
    rss.thread.start()
    try:
        server = {"proc": proc, "url": url, "key": key, "rss": rss}
        server["ready_s"] = wait_ready(url, proc, log_file, timeout=600)
        asyncio.run(closed_loop(url, key, texts[:8], 4, 5))  # warm-up: first batches, caches
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        rss.stop.set()


def measure_server(name: str, flags: str, texts: list[str], args, work: Path) -> dict:
    with started_server(name, flags, args.threads, work, texts) as server:
        proc, url, key, ready_s, rss = (server[k] for k in ("proc", "url", "key", "ready_s", "rss"))
        busy = others_running({os.getpid(), proc.pid})
        log(f"{name}: ready in {ready_s:.0f}s; {args.clients} clients, closed loop, {args.seconds:.0f}s")
        closed = asyncio.run(closed_loop(url, key, texts, args.clients, args.seconds))
        log(f"  {closed['rps']} requests/s, p95 {closed['p95_s']}s")
        opens = []
        for share in args.rate_shares:
            rate = max(closed["rps"] * share, 0.1)
            r = asyncio.run(open_loop(url, key, texts, args.clients, rate, args.seconds))
            log(f"  open loop at {r['rate']}/s: p95 {r['p95_s']}s")
            opens.append(r)
        idle = asyncio.run(idle_latency(url, key, texts, args.idle)) if args.idle else None
        if idle:
            log(f"  idle, one at a time: p50 {idle['p50_s']}s p95 {idle['p95_s']}s")
        request_s = asyncio.run(one_request(url, key, texts[:args.request_texts])) if args.request_texts else None
        if request_s is not None:
            log(f"  one request of {args.request_texts} texts: {request_s:.2f}s")
    within = [r for r in opens if r["ok"] == r["requests"] and r["p95_s"] <= args.p95]
    return {"server": name, "flags": flags, "ready_s": round(ready_s, 1), "closed": closed, "open": opens,
            "idle": idle, "request_s": round(request_s, 2) if request_s is not None else None,
            "rps_at_p95_1s": max((r["rps"] for r in within), default=0.0),
            "peak_rss_gb": round(rss.summary()["max_mb"] / 1024, 2), "others_busy": busy}


def to_markdown(rows: list[dict], args) -> str:
    table = [{"server": r["server"], "clients": args.clients, "saturated_rps": r["closed"]["rps"],
              "bulk_docs_s": r.get("bulk_docs_s"), "vs_bulk": r.get("vs_bulk"),
              "p50_s": r["closed"]["p50_s"], "p95_s": r["closed"]["p95_s"],
              f"rps_at_p95_{args.p95:g}s": r["rps_at_p95_1s"],
              "idle_p50_s": (r.get("idle") or {}).get("p50_s"), "idle_p95_s": (r.get("idle") or {}).get("p95_s"),
              f"request_{args.request_texts}_s": r.get("request_s"), f"bulk_{args.request_texts}_s":
              r.get("bulk_request_s"), "request_vs_bulk": r.get("request_vs_bulk"),
              "peak_rss_gb": r["peak_rss_gb"], "ready_s": r["ready_s"]} for r in rows]
    cols = list(table[0]) if table else []
    lines = [f"## nerft serve under {args.clients} concurrent one-sentence clients, beside the bulk path\n",
             markdown_table(table, cols), "",
             "Open-loop rates tried (requests/s offered -> served, p95):", ""]
    for r in rows:
        tried = "; ".join(f"{o['rate']} -> {o['rps']}, p95 {o['p95_s']} s" for o in r["open"])
        lines.append(f"- {r['server']} (`nerft serve {r['flags']}`): {tried}")
    lines += ["", f"Texts: the first {args.texts_limit} of the seeded CCFBDCI test split, in order, cycling. "
              f"bulk_docs_s: `benchmarks.bulk_rate` (nerft predict --input after loading) with the server's model "
              f"flags on those texts; vs_bulk = saturated_rps / bulk_docs_s. idle: {args.idle} sentences one at a "
              f"time. request_{args.request_texts}_s: one request of the first {args.request_texts} texts, alone; "
              f"bulk_{args.request_texts}_s: the bulk path on the same texts.", "",
              f"saturated_rps and p50/p95: {args.clients} clients in a closed loop for {args.seconds:g} s. "
              f"rps_at_p95: the highest open-loop rate whose p95 latency (waiting for a client included) stayed "
              f"<= {args.p95:g} s. peak_rss_gb: the server process, model load included."]
    return "\n".join(lines)


def servers_and_texts(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[str]]:
    """``--server NAME=FLAGS`` specs as (name, flags), and the first ``--texts-limit`` texts of ``--test`` (default:
    the seeded CCFBDCI test split, prepared from ../shared)."""
    servers = []
    for spec in args.server:
        name, sep, flags = spec.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--server {spec!r}: expected NAME=FLAGS")
        servers.append((name.strip(), flags.strip()))
    test_file = args.test or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "test.jsonl")
    return servers, [d["text"] for d in read_jsonl(test_file)][:args.texts_limit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", required=True, help="NAME=FLAGS for nerft serve (repeatable)")
    parser.add_argument("--test", default=None, help="test.jsonl (default: nerft prepare of ../shared CCFBDCI)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0, help="per closed-loop run and per open-loop rate")
    parser.add_argument("--rate-shares", default="0.5,0.75,0.9",
                        help="open-loop rates as shares of the saturated requests/s")
    parser.add_argument("--p95", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts-limit", type=int, default=128, help="the first N test texts are sent (and bulk)")
    parser.add_argument("--idle", type=int, default=100, help="sentences sent one at a time (0: skip)")
    parser.add_argument("--request-texts", type=int, default=32, help="texts in the one big request (0: skip)")
    parser.add_argument("--no-bulk", action="store_true", help="skip the bulk baseline")
    parser.add_argument("--out-name", default="serve_throughput")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)
    args.rate_shares = [float(x) for x in args.rate_shares.split(",") if x.strip()]
    servers, texts = servers_and_texts(args)
    work = Path(args.work) / "serve_throughput"
    work.mkdir(parents=True, exist_ok=True)
    texts_file = work / "texts.jsonl"
    texts_file.write_text("".join(json.dumps({"id": str(i), "text": t}, ensure_ascii=False) + "\n"
                                  for i, t in enumerate(texts)), encoding="utf-8")
    bulk: dict[str, dict] = {}
    rows = []
    for name, flags in servers:
        key = " ".join(bulk_flags(flags))
        if not args.no_bulk and key not in bulk:
            sizes = sorted({len(texts), *([args.request_texts] if args.request_texts else [])})
            bulk[key] = measure_bulk(flags, texts_file, sizes, args.threads)
            log(f"bulk ({key}): {bulk[key]}")
        row = measure_server(name, flags, texts, args, work)
        if key in bulk:
            b = bulk[key]["sizes"]
            row["bulk_docs_s"] = b[str(len(texts))]["docs_per_s"]
            row["vs_bulk"] = round(row["closed"]["rps"] / row["bulk_docs_s"], 2)
            if args.request_texts and row["request_s"]:
                row["bulk_request_s"] = b[str(args.request_texts)]["seconds"]
                row["request_vs_bulk"] = round(row["request_s"] / row["bulk_request_s"], 2)
        rows.append(row)
    write_results(args.out_name, {"benchmark": "serve_throughput", "clients": args.clients,
                                  "seconds": args.seconds, "p95_bound_s": args.p95, "rows": rows},
                  to_markdown(rows, args), Path(args.results))
    print(json.dumps([{k: r.get(k) for k in ("server", "vs_bulk", "rps_at_p95_1s", "request_vs_bulk", "peak_rss_gb")}
                      for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
