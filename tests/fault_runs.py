"""The fault tests' machinery (tests/test_faults.py, marked e2e): ``nerft`` as child processes of the test, the
demo's corpus and tiny random Qwen2 as a workspace, one result row per fault, and the report that
``NERFT_FAULT_REPORT=DIR`` writes (DIR/fault_harness.{json,md}, the table docs/reliability.md quotes).

Every child runs with one torch thread and a timeout, so a hung fault fails its test instead of the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHILD_TIMEOUT_S = 240
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONUNBUFFERED": "1"}
REPORT_COMMAND = "NERFT_FAULT_REPORT=benchmarks/results python -m pytest -m e2e tests/test_faults.py"


def log(msg: str) -> None:
    print(f"[faults] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- child processes


def nerft_args(*args: Any) -> list[str]:
    return [sys.executable, "-m", "nerft", *map(str, args)]


def run(*args: Any, timeout: float = CHILD_TIMEOUT_S) -> tuple[int, str, float]:
    """``nerft ARGS`` to completion: (exit code, the last stderr line that says something, seconds)."""
    started = time.perf_counter()
    done = subprocess.run(nerft_args(*args), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=timeout)
    return done.returncode, last_line(done.stderr), time.perf_counter() - started


def last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if " error: " in line or line.startswith("Traceback")]
    return (errors or lines or [""])[-1]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("nerft ") and ": error: " in line]


def start(*args: Any) -> subprocess.Popen:
    return subprocess.Popen(nerft_args(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=REPO)


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = CHILD_TIMEOUT_S) -> bool:
    """Poll ``ready`` until it holds (True) or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def finish(proc: subprocess.Popen, timeout: float = CHILD_TIMEOUT_S) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    return proc.returncode, stderr


def complete_lines(path: Path) -> list[bytes]:
    if not path.is_file():
        return []
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in complete_lines(run_dir / "train_log.jsonl")
            if b'"loss"' in line]


def checkpoint_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("step-*") if (p / "trainer_state.json").is_file())


def adapter_difference(a: Path, b: Path) -> dict[str, Any]:
    """Bitwise equality and the largest absolute difference of two runs' final adapters."""
    from safetensors.torch import load_file

    ta = load_file(str(a / "adapter" / "adapter_model.safetensors"))
    tb = load_file(str(b / "adapter" / "adapter_model.safetensors"))
    if ta.keys() != tb.keys():
        return {"identical": False, "max_abs_diff": None}
    diff = max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta)
    return {"identical": all(bool((ta[k] == tb[k]).all()) for k in ta), "max_abs_diff": diff}


# --------------------------------------------------------------------------------------------------------- setup


class Workspace:
    """The corpus, its prepared splits, the tiny base model, the training recipe and a text corpus to predict."""

    def __init__(self, root: Path, docs: int, steps: int, save_every: int):
        from nerft.demo import build_base_model, train_recipe
        from nerft.jsonl import write_jsonl
        from nerft.prepare import PrepareConfig, prepare
        from nerft.resources.demo_corpus import generate_corpus

        self.root, self.steps, self.save_every = root, steps, save_every
        corpus = generate_corpus(docs, seed=0)
        write_jsonl(root / "corpus.jsonl", corpus)
        prepare(PrepareConfig(input=str(root / "corpus.jsonl"), out=str(root / "data"), format="nerft",
                              labels="ccfbdci", seed=0, dev=0.1, test=0.1, plot=False))
        build_base_model(root / "base", corpus, hidden_size=64, layers=2, seed=0)
        recipe = train_recipe(str(root / "base"), str(root / "data"), str(root / "run"), steps=steps, seed=0)
        recipe["data"].update({"dev": None, "test": None})  # no generation in the loop: training only
        recipe["optim"]["batch_size"] = 8
        recipe["eval"]["at_start"] = False
        recipe["tracking"]["log_every"] = 1  # one log line per step: the harness watches progress through it
        recipe["output"].update({"save_every": save_every, "overwrite": False})
        self.recipe = root / "recipe.yaml"
        import yaml

        self.recipe.write_text(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False), encoding="utf-8")
        self.texts = root / "texts.txt"
        self.texts.write_text("".join(d.text + "\n" for d in generate_corpus(docs, seed=1)), encoding="utf-8")

    def train(self, out: Path, *extra: Any) -> list[Any]:
        return ["train", "--config", self.recipe, "--out", out, *extra]

    def predict(self, model: Path, inp: Path, out: Path, *extra: Any) -> list[Any]:
        return ["predict", "--model", model, "--device", "cpu", "--input", inp, "--output", out, "--batch-size", 8,
                "--max-new-tokens", 12, "--no-progress", *extra]


_SHORTEN: dict[str, str] = {}  # the work folder's path -> a short name, in the messages reported


def row(fault: str, expected: str, observed: str, lost: str, ok: bool, seconds: float, **extra: Any) -> dict:
    for long, short in _SHORTEN.items():
        observed = observed.replace(long, short)
    log(f"{'ok  ' if ok else 'FAIL'} {fault}: {observed} (lost: {lost})")
    return {"fault": fault, "expected": expected, "observed": observed, "lost": lost, "ok": ok,
            "seconds": round(seconds, 1), **extra}


def write_report(out_dir: Path, rows: list[dict], settings: dict[str, Any], reference_s: float,
                 total_s: float) -> None:
    """The fault table as the harness wrote it: ``out_dir``/fault_harness.{json,md}, with the machine line."""
    from benchmarks.common import machine_info, markdown_table, write_results

    failed = [r["fault"] for r in rows if not r["ok"]]
    payload = {"machine": {**machine_info(), "command": REPORT_COMMAND}, "settings": settings,
               "reference": {"train_seconds": round(reference_s, 1)}, "faults": rows,
               "all_ok": not failed, "seconds": round(total_s, 1)}
    table = markdown_table([{**r, "ok": "yes" if r["ok"] else "NO"} for r in rows],
                           ["fault", "expected", "observed", "lost", "ok", "seconds"])
    markdown = (f"# Fault harness\n\n{len(rows) - len(failed)} of {len(rows)} faults handled as promised"
                f"{' (failed: ' + '; '.join(failed) + ')' if failed else ''}; {total_s:.0f} s in all. Training runs: "
                f"{settings['steps']} steps of the demo's tiny random Qwen2 (hidden 64, 2 layers), a checkpoint every "
                f"{settings['save_every']} steps; the uninterrupted run took {reference_s:.1f} s. 'lost' counts what "
                "the fault destroyed after recovery; steps run again after a kill are work repeated, not lost. WORK/ "
                "is the tests' temporary folder (removed at the end).\n\n" + table + "\n")
    write_results("fault_harness", payload, markdown, out_dir)
