"""Where a loaded server's time goes: ``nerft serve`` under closed-loop clients, sampled by py-spy.

    python -m benchmarks.profile_serve --server "continuous=--model RUN" --server "tagger=--model TAGGER_RUN"

For each ``--server NAME=FLAGS`` (started as ``benchmarks.serve_throughput`` starts it): after a warm-up, ``--clients``
one-sentence clients in a closed loop for ``--seconds``; meanwhile py-spy (``pip install py-spy``) samples the
server's on-CPU stacks (every thread, 50 a second) over a window of ``--seconds`` - 6 s that starts 2 s in (every
client waiting), and the CPU seconds of the server and of this process (the load generator) are read over the same
window. Each on-CPU sample is put in the first of BUCKETS whose file names appear
in its stack: model forward passes, decoding bookkeeping outside them, answer reading, tokenization, HTTP, the
event loop. ``server_cpu_share``: the server's CPU seconds over the machine's (wall x cores): below 1, the cores
waited. Without py-spy the CPU figures are still written. Writes ``profile_serve.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .common import RESULTS, WORK, markdown_table, write_results
from .serve_throughput import closed_loop, servers_and_texts, started_server

BUCKETS = [("model forward", ("modeling_", "torch/nn/modules", "nerft/tagger/model.py")),
           ("decoding bookkeeping", ("nerft/generation.py", "nerft/constrained.py", "nerft/tagger/")),
           ("answer reading", ("nerft/answers.py", "nerft/answer_reader.py", "nerft/grounding.py",
                               "nerft/formats.py", "nerft/windows.py")),
           ("tokenization, prompts", ("tokenization", "tokenizers", "nerft/prompts.py")),
           ("HTTP", ("uvicorn", "starlette", "fastapi", "h11", "pydantic", "json/")),
           ("event loop", ("asyncio",))]


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bucket_shares(raw: Path) -> dict[str, float]:
    """Shares of the on-CPU samples in each bucket (py-spy's raw format: ``frame;frame;... count`` per line)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        label = next((name for name, keys in BUCKETS if any(k in stack for k in keys)), "other")
        counts[label] += int(n)
    total = sum(counts.values()) or 1
    return {name: round(counts[name] / total, 3) for name, _ in [*BUCKETS, ("other", ())]}


def profile_server(name: str, flags: str, texts: list[str], args: argparse.Namespace, work: Path) -> dict:
    with started_server(name, flags, args.threads, work, texts) as server:
        proc, url, key = server["proc"], server["url"], server["key"]
        result: dict = {}
        loader = threading.Thread(target=lambda: result.update(
            asyncio.run(closed_loop(url, key, texts, args.clients, args.seconds))))
        loader.start()
        time.sleep(2)  # every client connected and waiting: the window below is under full load
        window = max(1, int(args.seconds) - 6)
        server0, self0, start = process_cpu_seconds(proc.pid), resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        raw = work / f"{name}.pyspy.txt"
        if spy:
            subprocess.run([spy, "record", "--pid", str(proc.pid), "--duration", str(window), "--rate", "50",
                            "--format", "raw", "--nonblocking", "--threads", "-o", str(raw)],
                           capture_output=True, check=False)
        else:
            time.sleep(window)
        wall = time.monotonic() - start
        server_cpu = process_cpu_seconds(proc.pid) - server0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        shares = bucket_shares(raw) if spy and raw.exists() else None
        loader.join()
    cores = os.cpu_count() or 1
    return {"server": name, "flags": flags, "rps": result.get("rps"), "wall_s": round(wall, 1),
            "server_cpu_s": round(server_cpu, 1), "server_cpu_share": round(server_cpu / (wall * cores), 2),
            "load_generator_cpu_s": round(client_cpu, 1), "on_cpu_samples": shares}


def to_markdown(rows: list[dict], args: argparse.Namespace) -> str:
    table = []
    for r in rows:
        row = {k: r[k] for k in ("server", "rps", "server_cpu_share", "server_cpu_s", "load_generator_cpu_s")}
        for name, share in (r["on_cpu_samples"] or {}).items():
            row[name] = f"{100 * share:.1f}%"
        table.append(row)
    cols = list(dict.fromkeys(c for row in table for c in row))
    return "\n".join([f"## Where a loaded server's time goes ({args.clients} one-sentence clients, "
                      f"{args.seconds:g} s)\n", markdown_table(table, cols), "",
                      "server_cpu_share: the server's CPU seconds over wall x cores. The other columns: shares of "
                      "py-spy's on-CPU samples of the server, each in the first bucket whose files its stack holds "
                      "(model forward before bookkeeping: a decode step's torch calls count as model forward)."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", required=True, help="NAME=FLAGS for nerft serve (repeatable)")
    parser.add_argument("--test", default=None, help="test.jsonl (default: nerft prepare of ../shared CCFBDCI)")
    parser.add_argument("--texts-limit", type=int, default=128)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)
    servers, texts = servers_and_texts(args)
    work = Path(args.work) / "profile_serve"
    work.mkdir(parents=True, exist_ok=True)
    rows = [profile_server(name, flags, texts, args, work) for name, flags in servers]
    write_results("profile_serve", {"benchmark": "profile_serve", "clients": args.clients, "rows": rows},
                  to_markdown(rows, args), Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
