"""Load and fault harness for ``nerft serve``: loopback only, bounded, stops by itself (about 2 minutes on 2 cores).

    python -m benchmarks.serve_load [--clients 8] [--requests 12] [--results benchmarks/results]

It builds a tiny random Qwen2 with a character tokenizer (as ``nerft demo`` does) into a merged model folder, starts
``nerft serve`` on it in a subprocess on 127.0.0.1 with an API key, and then:

1. mixed load: ``--clients`` concurrent clients x ``--requests`` requests, each request one of: valid (1-4 texts),
   poisoned (a lone surrogate, a non-string, an empty text, an unknown label), oversized (a 2 MB body), a client
   that gives up after 0.3 s, or no API key. Each kind has a promised answer (200, 4xx naming the problem, 413, no
   work, 401); "held" counts the requests that got it.
2. abandoned work: three 32 x 4000-character requests whose client gives up after 0.5 s, then one one-text request
   (the probe that once took 27.8 s): its latency, and how many of the 96 texts were computed vs skipped.
3. idle connections: 300 connections that send nothing or half a request line, beside 32 normal requests: all
   answered, the idle ones closed by ``--header-timeout``.
4. SIGTERM with requests in flight: they must all finish with 200; the process must exit 0.
5. connection attacks (``ATTACKS``), each against a fresh server under ``ulimit -n 1024``: 1,000 requests that
   declare a body and send none (+ 40 idle sockets), and 1,040 idle sockets reopened every 10 s, while legitimate
   clients ask every 0.25 s: how many of them are answered, how fast, and how much the server logs meanwhile.

Writes ``serve_load.json`` and ``serve_load.md`` (latency p50/p95, status counts, server RSS, what else ran on the
machine). The numbers describe the server's behaviour, not the model: the model is random and its answers are cut
at 16 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from .common import RESULTS, log, markdown_table, write_results

SERVER_FLAGS = ["--device", "cpu", "--dtype", "fp32", "--max-new-tokens", "16",
                "--batch-size", "16", "--timeout", "20"]
SERVER_THREADS = 1  # the machine is shared: one core for the server, the other for the clients and everyone else
KINDS = {"valid": 0.62, "poisoned": 0.12, "oversized": 0.06, "gives_up": 0.12, "no_key": 0.08}


def build_model(folder: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """A merged nerft model folder (random tiny Qwen2, char tokenizer, nerft.json) and texts the tokenizer covers."""
    from nerft.demo import build_base_model
    from nerft.labels import ccfbdci_labels
    from nerft.prompts import build_prompt
    from nerft.resources.demo_corpus import generate_corpus
    from nerft.rundir import RunInfo

    docs = generate_corpus(300, seed=seed)
    build_base_model(folder, docs, hidden_size=64, layers=2, seed=seed)
    labels = ccfbdci_labels()
    RunInfo(base_model=None, labels=labels, prompt=build_prompt(labels, "compact"), merged=True).save(folder)
    return folder, [d.text for d in docs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, key: str, log_file: Path, max_files: int | None = None
                 ) -> subprocess.Popen:
    """``nerft serve`` in a subprocess; ``max_files``: its descriptor limit (``ulimit -n``)."""
    env = {**os.environ, "NERFT_API_KEY": key, "OMP_NUM_THREADS": str(SERVER_THREADS), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "nerft", "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           *SERVER_FLAGS]
    log("$ " + (f"(ulimit -n {max_files}) " if max_files else "") + " ".join(cmd[1:]))

    def limit_files() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return subprocess.Popen(cmd, env=env, stdout=log_file.open("w"), stderr=subprocess.STDOUT,
                            preexec_fn=limit_files if max_files else None)


def wait_ready(url: str, proc: subprocess.Popen, log_file: Path, timeout: float = 180) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready after {timeout} s")


class RssSampler:
    """The server's resident memory, sampled every 0.25 s (MB): first, highest, last."""

    def __init__(self, pid: int):
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            rss = rss_mb(self.pid)
            if rss is None:
                return
            self.samples.append(rss)

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        return {"first_mb": s[0], "max_mb": max(s), "last_mb": s[-1]}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def others_running(own: set[int]) -> list[str]:
    """The busiest processes on the machine that are not this harness or its server (name and %CPU)."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
    busy = []
    for line in out.splitlines()[1:]:
        pid, pcpu, comm = line.split(None, 2)
        if int(pid) not in own and float(pcpu) >= 5:
            busy.append(f"{comm} {pcpu}%")
    return busy[:6]


# --- the mixed workload -----------------------------------------------------------------------------------------

def make_request(kind: str, texts: list[str], rng: random.Random) -> tuple[bytes, str]:
    """The body of one request of ``kind`` and what it probes."""
    if kind == "poisoned":
        payload, what = rng.choice([({"texts": [rng.choice(texts), "\ud800王伟"]}, "lone surrogate"),
                                    ({"texts": [rng.choice(texts), 42]}, "non-string"),
                                    ({"texts": ["  "]}, "empty text"),
                                    ({"texts": [rng.choice(texts)], "labels": ["NOPE"]}, "unknown label")])
        return json.dumps(payload).encode(), what
    if kind == "oversized":
        return json.dumps({"texts": ["北京" * 350_000]}).encode(), "2 MB body"
    if kind == "gives_up":
        return json.dumps({"texts": ["".join(rng.choices(texts, k=40))[:1500]] * 8}).encode(), "8 x 1500 chars"
    labels = rng.choice([None, None, ["PER"], ["LOC", "GPE"]])
    payload = {"texts": rng.sample(texts, rng.randint(1, 4)), **({"labels": labels} if labels else {})}
    return json.dumps(payload).encode(), "1-4 texts"


def outcome_held(kind: str, status: int | str) -> bool:
    return {"valid": status == 200, "poisoned": status in (400, 422), "oversized": status in (413, "closed"),
            "gives_up": status in ("gave up", 200), "no_key": status == 401}[kind]


async def one_request(client: httpx.AsyncClient, body: bytes, key: str | None,
                      give_up_after: float | None = None) -> tuple[int | str, float]:
    """POST /v1/ner; the status, or what happened instead ("gave up", "closed"), and the seconds it took."""
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    t0 = time.monotonic()
    try:
        coro = client.post("/v1/ner", content=body, headers=headers)
        r = await (asyncio.wait_for(coro, give_up_after) if give_up_after else coro)
        status: int | str = r.status_code
    except asyncio.TimeoutError:
        status = "gave up"
    except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
        status = "closed"  # the server answered 413 and closed before the client finished writing
    return status, time.monotonic() - t0


async def mixed_load(url: str, key: str, texts: list[str], clients: int, requests: int, seed: int) -> list[dict]:
    records: list[dict] = []

    async def client_loop(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(requests):
                kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
                body, what = make_request(kind, texts, rng)
                status, seconds = await one_request(client, body, None if kind == "no_key" else key,
                                                    0.3 if kind == "gives_up" else None)
                records.append({"kind": kind, "what": what, "status": status, "seconds": round(seconds, 4),
                                "held": outcome_held(kind, status)})

    await asyncio.gather(*(client_loop(k) for k in range(clients)))
    return records


async def idle_connections(url: str, key: str, texts: list[str], n_idle: int = 300) -> dict[str, Any]:
    """``n_idle`` connections that send nothing (a third) or the start of a request and stop, opened before 8
    clients send 24 valid requests and 8 /health probes; then how long the server takes to close the idle ones
    (its --header-timeout)."""
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    idle = []
    for k in range(n_idle):
        reader, writer = await asyncio.open_connection(host, port)
        if k % 3:
            writer.write(b"POST /v1/ner HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
        idle.append((reader, writer))
    t0 = time.monotonic()
    statuses: list[int | str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def serve_one(k: int) -> None:
            if k % 4 == 3:
                statuses.append((await client.get("/health")).status_code)
                return
            body = json.dumps({"texts": [texts[k % len(texts)]]}, ensure_ascii=False).encode()
            statuses.append((await one_request(client, body, key))[0])

        await asyncio.gather(*(serve_one(k) for k in range(32)))
    served_s = time.monotonic() - t0
    closed_at: list[float] = []
    still_open = 0
    for reader, writer in idle:  # the server closes each: reading then ends with b""
        try:
            await asyncio.wait_for(reader.read(), max(1.0, 30 - (time.monotonic() - t0)))
        except asyncio.TimeoutError:
            still_open += 1
        except ConnectionError:
            pass
        closed_at.append(time.monotonic() - t0)
        writer.close()
    metrics_text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {key}"}).text
    return {"idle_connections": n_idle, "served": len(statuses), "statuses": dict(Counter(map(str, statuses))),
            "served_seconds": round(served_s, 2), "all_idle_closed_after_s": round(max(closed_at), 1),
            "idle_still_open_after_30_s": still_open,
            "timed_out_metric": metric(metrics_text, "nerft_connections_timed_out_total")}


ATTACKS = {  # name -> (sockets kept open, what each sends, reopened every N s or as soon as the server closes it)
    "slow_body": (1000, b"POST /v1/ner HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n", 0.0),
    "idle_reopened": (1040, b"", 10.0),
}


async def connection_attack(url: str, key: str, texts: list[str], name: str, seconds: float = 30.0
                            ) -> dict[str, Any]:
    """An attacker keeps the sockets of ``ATTACKS[name]`` open against the server (slow_body: 1,000 requests that
    declare a 100-byte body and send none, plus 40 idle sockets, each reopened as soon as it is closed;
    idle_reopened: 1,040 sockets that send nothing, all reopened every 10 s) while 4 legitimate clients send a
    request every 0.25 s (/health and a one-text /v1/ner by turns) for ``seconds``: how many got 200, and how
    fast."""
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    count, payload, every = ATTACKS[name]
    stop = asyncio.Event()
    opened = failed = 0

    async def hold(k: int) -> None:
        nonlocal opened, failed
        first = payload if k < count or not payload else b""
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                failed += 1
                await asyncio.sleep(0.2)
                continue
            opened += 1
            if first:
                writer.write(first)
            try:
                await asyncio.wait_for(reader.read(), every or None)  # until the server closes it (or every s)
            except (asyncio.TimeoutError, ConnectionError):
                pass
            writer.close()

    attackers = [asyncio.ensure_future(hold(k)) for k in range(count + (40 if payload else 0))]
    await asyncio.sleep(3.0)  # the sockets are in place
    results: list[tuple[str, int | str, float]] = []

    async def legit(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            end = time.monotonic() + seconds
            turn = 0
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    if (turn + k) % 2:
                        status: int | str = (await client.get("/health")).status_code
                    else:
                        body = json.dumps({"texts": [texts[turn % len(texts)]]}, ensure_ascii=False).encode()
                        status = (await one_request(client, body, key))[0]
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                results.append(("health" if (turn + k) % 2 else "ner", status, time.monotonic() - t0))
                turn += 1
                await asyncio.sleep(0.25)

    await asyncio.gather(*(legit(k) for k in range(4)))
    stop.set()
    for task in attackers:
        task.cancel()
    await asyncio.gather(*attackers, return_exceptions=True)
    secs = sorted(r[2] for r in results)
    metrics_text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {key}"}).text
    return {"attack": name, "attacker_sockets": count + (40 if payload else 0), "attacker_connections": opened,
            "attacker_refused": failed, "legit_requests": len(results),
            "legit_200": sum(r[1] == 200 for r in results),
            "legit_statuses": dict(Counter(str(r[1]) for r in results)),
            "legit_p50_s": round(statistics.median(secs), 3) if secs else None,
            "legit_p95_s": round(secs[int(0.95 * (len(secs) - 1))], 3) if secs else None,
            "closed_for_room": metric(metrics_text, 'nerft_connections_closed_total{reason="for_room"}'),
            "closed_slow_body": metric(metrics_text, 'nerft_connections_closed_total{reason="slow_body"}'),
            "accept_errors": metric(metrics_text, "nerft_accept_errors_total")}


def raise_own_descriptor_limit(wanted: int = 4096) -> None:
    """The attacker needs more sockets than the server it attacks may open."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def summarize(records: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        mine = [r for r in records if r["kind"] == kind]
        if not mine:
            continue
        secs = sorted(r["seconds"] for r in mine)
        rows.append({"kind": kind, "requests": len(mine), "held": sum(r["held"] for r in mine),
                     "outcomes": ", ".join(f"{s}: {n}" for s, n in sorted(Counter(str(r["status"]) for r in mine)
                                                                         .items())),
                     "p50_s": round(statistics.median(secs), 3), "p95_s": round(secs[int(0.95 * (len(secs) - 1))], 3)})
    return rows


# --- abandoned work and SIGTERM ---------------------------------------------------------------------------------

def metric(text: str, series: str) -> float:
    return float(next((line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(series + " ")), "0"))


async def abandoned_work(url: str, key: str, texts: list[str]) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {key}"}
    pool = "".join(texts) * (128_000 // len("".join(texts)) + 1)
    big = {"texts": [pool[i * 4000:(i + 1) * 4000] for i in range(32)]}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=auth) as client:
        before = (await client.get("/metrics")).text
        gave_up = await asyncio.gather(*(one_request(client, json.dumps(big).encode(), key, 0.5) for _ in range(3)))
        t0 = time.monotonic()
        probe = await client.post("/v1/ner", json={"texts": [texts[0]]})
        probe_s = time.monotonic() - t0
        await asyncio.sleep(1)
        after = (await client.get("/metrics")).text
    computed = metric(after, "nerft_texts_total") - metric(before, "nerft_texts_total") - 1
    skipped = metric(after, "nerft_texts_skipped_total") - metric(before, "nerft_texts_skipped_total")
    return {"abandoned_requests": 3, "abandoned_texts": 96, "client_outcomes": [str(g[0]) for g in gave_up],
            "abandoned_texts_computed": int(computed), "abandoned_texts_skipped": int(skipped),
            "next_request_status": probe.status_code, "next_request_seconds": round(probe_s, 3)}


async def sigterm_in_flight(url: str, key: str, texts: list[str], proc: subprocess.Popen) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {key}"}
    body = {"texts": ["".join(texts)[i * 800:(i + 1) * 800] for i in range(8)]}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=auth) as client:
        pending = [asyncio.ensure_future(client.post("/v1/ner", json=body)) for _ in range(4)]
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        try:
            late = (await client.post("/v1/ner", json={"texts": [texts[0]]})).status_code
        except httpx.HTTPError as exc:
            late = type(exc).__name__
        results = await asyncio.gather(*pending, return_exceptions=True)
    code = await asyncio.to_thread(proc.wait, 60)
    return {"in_flight": len(pending),
            "in_flight_outcomes": [r.status_code if isinstance(r, httpx.Response) else type(r).__name__
                                   for r in results],
            "request_after_sigterm": late, "exit_code": code, "seconds_to_exit": round(time.monotonic() - t0, 2)}


# --- the run ----------------------------------------------------------------------------------------------------

def run_attacks(model: Path, texts: list[str], tmp: Path, seconds: float = 30.0) -> list[dict[str, Any]]:
    """Each of ``ATTACKS`` against a fresh server under ``ulimit -n 1024`` (the probe's conditions): the legitimate
    clients' answers, and how much the server logged meanwhile."""
    raise_own_descriptor_limit()
    out = []
    for name in ATTACKS:
        port, key, log_file = free_port(), secrets.token_urlsafe(24), tmp / f"server-{name}.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_server(model, port, key, log_file, max_files=1024)
        try:
            wait_ready(url, proc, log_file)
            size_before = log_file.stat().st_size
            row = asyncio.run(asyncio.wait_for(connection_attack(url, key, texts, name, seconds), seconds + 120))
            row["server_log_bytes"] = log_file.stat().st_size - size_before
            row["server_alive"] = proc.poll() is None
        finally:
            proc.kill()
            proc.wait()
        log(f"attack {name}: {row}")
        out.append(row)
    return out


def run(clients: int, requests: int, seed: int, attack_seconds: float = 30.0) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="nerft-serve-load-") as tmp:
        model, texts = build_model(Path(tmp) / "model", seed)
        port, key, log_file = free_port(), secrets.token_urlsafe(24), Path(tmp) / "server.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_server(model, port, key, log_file)
        try:
            startup_s = wait_ready(url, proc, log_file)
            log(f"server ready in {startup_s:.1f} s")
            sampler = RssSampler(proc.pid)
            sampler.thread.start()
            busy = others_running({os.getpid(), proc.pid})
            t0 = time.monotonic()
            records = asyncio.run(asyncio.wait_for(mixed_load(url, key, texts, clients, requests, seed), 300))
            load_s = time.monotonic() - t0
            log(f"mixed load: {len(records)} requests in {load_s:.1f} s")
            abandoned = asyncio.run(asyncio.wait_for(abandoned_work(url, key, texts), 300))
            log(f"abandoned work: {abandoned}")
            idle = asyncio.run(asyncio.wait_for(idle_connections(url, key, texts), 300))
            log(f"idle connections: {idle}")
            metrics_text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {key}"}).text
            alive = httpx.get(url + "/health").status_code == 200
            sampler.stop.set()
            sigterm = asyncio.run(asyncio.wait_for(sigterm_in_flight(url, key, texts, proc), 120))
            log(f"SIGTERM: {sigterm}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server_log = log_file.read_text(errors="replace")
        attacks = run_attacks(model, texts, Path(tmp)) if attack_seconds else []
    sigterm["shutdown_completed"] = "Application shutdown complete" in server_log
    rows = summarize(records)
    return {
        "settings": {"clients": clients, "requests_per_client": requests, "seed": seed,
                     "server_flags": SERVER_FLAGS, "server_torch_threads": SERVER_THREADS, "kinds": KINDS},
        "startup_seconds": round(startup_s, 1), "mixed_load_seconds": round(load_s, 1),
        "requests": len(records), "held": sum(r["held"] for r in records), "by_kind": rows,
        "status_counts": dict(Counter(str(r["status"]) for r in records)),
        "server_alive_after_load": alive, "server_rss": sampler.summary(),
        "abandoned_work": abandoned, "idle_connections": idle, "sigterm": sigterm, "attacks": attacks,
        "metrics_excerpt": [line for line in metrics_text.splitlines()
                            if line.startswith(("nerft_http_requests_total{path=\"/v1/ner\"", "nerft_texts",
                                                "nerft_batch_texts_count", "nerft_batch_texts_sum",
                                                "nerft_batch_failures_total"))],
        "machine_load": {"load_avg_before": [round(x, 2) for x in load_before],
                         "load_avg_after": [round(x, 2) for x in os.getloadavg()], "other_busy_processes": busy},
        "server_log_tail": server_log.splitlines()[-5:],
        "records": records,
    }


def to_markdown(r: dict[str, Any]) -> str:
    s, a, t, m = r["settings"], r["abandoned_work"], r["sigterm"], r["machine_load"]
    lines = [
        f"# nerft serve under load and faults ({s['clients']} clients x {s['requests_per_client']} requests)",
        "",
        f"Server: `nerft serve` on a tiny random Qwen2 (char tokenizer), flags `{' '.join(s['server_flags'])}`, "
        f"{s['server_torch_threads']} torch thread, API key set, 127.0.0.1. Ready in {r['startup_seconds']} s.",
        f"Machine load: load average {m['load_avg_before']} before, {m['load_avg_after']} after; other busy "
        f"processes at the start: {', '.join(m['other_busy_processes']) or 'none'}.",
        "",
        f"**Mixed load**: {r['requests']} requests in {r['mixed_load_seconds']} s; **{r['held']}/{r['requests']} got "
        f"the promised answer**; server alive afterwards: {r['server_alive_after_load']}; server RSS "
        f"{r['server_rss']['first_mb']} MB at the start, {r['server_rss']['max_mb']} MB at most, "
        f"{r['server_rss']['last_mb']} MB at the end.",
        "",
        markdown_table(r["by_kind"], ["kind", "requests", "held", "outcomes", "p50_s", "p95_s"]),
        "",
        "Promised: valid 200; poisoned (lone surrogate, non-string, empty text, unknown label) 422/400 naming the "
        "problem; oversized (2 MB) 413 before parsing (or the connection closed while the client was still "
        "writing); gives up (client timeout 0.3 s) never computed once dropped; no key 401.",
        "",
        f"**Abandoned work**: 3 requests of 32 x 4000 characters whose client gave up after 0.5 s "
        f"({', '.join(a['client_outcomes'])}): {a['abandoned_texts_computed']} of their {a['abandoned_texts']} texts "
        f"were computed, {a['abandoned_texts_skipped']} skipped; the next one-text request answered "
        f"{a['next_request_status']} in {a['next_request_seconds']} s.",
        "",
        f"**Idle connections**: {r['idle_connections']['idle_connections']} connections that send nothing or "
        f"the start of a request and stop, open while 32 requests were sent (24 valid, 8 /health): statuses "
        f"{r['idle_connections']['statuses']} in {r['idle_connections']['served_seconds']} s; every idle one "
        f"closed by the server after {r['idle_connections']['all_idle_closed_after_s']} s "
        f"(nerft_connections_timed_out_total {r['idle_connections']['timed_out_metric']:g}).",
        "",
        f"**SIGTERM with {t['in_flight']} requests in flight**: their outcomes {t['in_flight_outcomes']}; a request "
        f"sent after the signal: {t['request_after_sigterm']} (the port is closed at once); the application's "
        f"shutdown completed: {t['shutdown_completed']}; exit status {t['exit_code']} after {t['seconds_to_exit']} "
        "s (uvicorn re-raises SIGTERM once its graceful shutdown is done, hence -15).",
        "",
        *(["**Connection attacks** (issue 43), each against a fresh server under `ulimit -n 1024` while 4 "
           "clients send a request every 0.25 s (/health and a one-text /v1/ner by turns) for 30 s: slow_body = "
           "1,000 requests declaring a 100-byte body that never comes + 40 idle sockets, each reopened as soon as "
           "it is closed; idle_reopened = 1,040 sockets that send nothing, reopened every 10 s:", "",
           markdown_table(r["attacks"], ["attack", "attacker_sockets", "attacker_connections", "legit_requests",
                                         "legit_200", "legit_p50_s", "legit_p95_s", "closed_for_room",
                                         "closed_slow_body", "accept_errors", "server_log_bytes", "server_alive"]),
           ""] if r.get("attacks") else []),
        "Server metrics at the end of the load (before SIGTERM):",
        "",
        "```",
        *r["metrics_excerpt"],
        "```",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=12, help="requests per client")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack-seconds", type=float, default=30.0, help="each connection attack (0: none)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    result = run(args.clients, args.requests, args.seed, args.attack_seconds)
    write_results("serve_load", result, to_markdown(result), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
