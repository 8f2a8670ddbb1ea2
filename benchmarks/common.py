"""What every benchmark shares: default paths, machine description, child processes with peak RSS, result files."""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"  # git-ignored: prepared splits, adapters, predictions
DEFAULT_MODEL = Path(os.environ.get("NER_ASSETS", Path.home() / ".cache" / "ner-assets")) / "qwen2.5-coder-0.5b-instruct"
CCFBDCI = SHARED / "data" / "ccfbdci" / "ccfbdci.jsonl"
QWEN2_TOKENIZER = SHARED / "assets" / "qwen2-tokenizer"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Progress:
    """Prints done/total, elapsed and ETA; cheap enough to call per item."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.start, self.done = total, what, time.perf_counter(), 0

    def step(self, n: int = 1, note: str = "") -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        log(f"{self.what}: {self.done}/{self.total} elapsed {elapsed:.0f}s ETA {eta:.0f}s {note}".rstrip())


# ---------------------------------------------------------------------------------------------------------------
# Child processes: each measured run gets a fresh interpreter, so peak RSS and warm caches belong to that run only.

def _in_child(func: Callable[..., dict], kwargs: dict) -> dict:
    threads = kwargs.pop("_threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    result = func(**kwargs)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["peak_rss_gb"] = round(max(own, kids) * 1024 / 1e9, 3)  # ru_maxrss is in KiB on Linux
    return result


IN_PROCESS = os.environ.get("NERFT_BENCH_IN_PROCESS") == "1"  # smoke tests: no child interpreters (faster)


def run_in_child(func: Callable[..., dict], threads: int | None = None, **kwargs: Any) -> dict:
    """Run ``func(**kwargs)`` in a fresh spawned interpreter; its dict result gains ``peak_rss_gb``.

    With NERFT_BENCH_IN_PROCESS=1 it runs in this process (peak RSS is then this process's).
    """
    if IN_PROCESS:
        return _in_child(func, dict(kwargs))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_in_child, func, {**kwargs, "_threads": threads}).result()


# ---------------------------------------------------------------------------------------------------------------
# Machine and software description, stored with every result.

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "git_commit": _git_commit(),
        "command": " ".join(["python", *getattr(sys, "orig_argv", sys.argv)[1:]]),
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # > cpu_count means the timings are contended
    except OSError:
        pass
    return info


# ---------------------------------------------------------------------------------------------------------------
# Result files

def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], markdown: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` atomically; the markdown gets the machine line and the command."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = payload.setdefault("machine", machine_info())
    header = (
        f"<!-- written by benchmarks; {machine['date_utc']} -->\n"
        f"Machine: {machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} torch threads"
        + (f", load {machine['load_avg_1m']}" if "load_avg_1m" in machine else "")
        + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
        + f"); torch {machine['torch']}, transformers {machine['transformers']}, peft {machine.get('peft', '-')}, "
        f"nerft commit {machine['git_commit']}.\n\nCommand: `{machine['command']}`\n\n"
    )
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    for path, text in ((json_path, json.dumps(payload, ensure_ascii=False, indent=2) + "\n"),
                       (md_path, header + markdown.rstrip() + "\n")):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    log(f"wrote {json_path} and {md_path}")
    return json_path, md_path


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` (default: all) records of a JSONL file, through nerft's one JSONL reader."""
    from nerft.jsonl import read_records

    return read_records(path, limit=limit)


def require(path: Path, how: str) -> Path:
    if not Path(path).exists():
        raise SystemExit(f"{path} not found: {how}")
    return Path(path)


def nerft_cli(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``nerft ARGS`` with the same interpreter (so the venv's nerft is used)."""
    cmd = [sys.executable, "-m", "nerft", *map(str, args)]
    log("$ nerft " + " ".join(map(str, args)))
    return subprocess.run(cmd, check=check, text=True, capture_output=capture, cwd=REPO)


def nerft_evaluate(gold: str | Path, pred: str | Path, out_dir: str | Path, source: str = "auto",
                   fmt: str | None = None, allow_missing: bool = False, labels: str | None = None) -> dict[str, Any]:
    """``nerft evaluate`` through its Python entry (what the CLI calls); writes OUT/metrics.json, returns it."""
    from nerft.config import build_config
    from nerft.evaluate import EvaluateConfig, evaluate

    cfg = build_config(EvaluateConfig, {"gold": str(gold), "pred": str(pred), "out": str(out_dir),
                                        "source": source, "format": fmt, "quiet": True,
                                        "allow_missing": allow_missing, "labels": labels})
    return evaluate(cfg)


def strict_row(strict: dict[str, Any]) -> dict[str, float]:
    """A result row from the ``strict`` part of nerft's metrics: micro P/R/F1 and F1 per label, in percent."""
    row = {k: round(100 * strict["micro"][k], 2) for k in ("precision", "recall", "f1")}
    row.update({f"f1_{label}": round(100 * d["f1"], 2) for label, d in strict["per_label"].items()})
    return row


def labels_beside(data_file: str | Path) -> str:
    """The label set for scoring: labels.json next to the data (nerft prepare writes it), else CCFBDCI's."""
    path = Path(data_file).parent / "labels.json"
    return str(path) if path.is_file() else "ccfbdci"


def prepare_ccfbdci(data: Path = CCFBDCI, out_dir: Path = WORK / "ccfbdci") -> Path:
    """``nerft prepare`` with the default seed; reused when already there. Returns the folder with the splits."""
    if not (out_dir / "train.jsonl").is_file() or not (out_dir / "test.jsonl").is_file():
        require(data, "the CCFBDCI data lives in ../shared/data (see ../shared/data/README.md)")
        nerft_cli("prepare", "--input", data, "--out", out_dir, "--no-plot")
    return out_dir
