"""The faults of tests/test_faults.py: kill, stop, starve and poison ``nerft``, then check what was lost (the
answer should be: nothing). Each function runs one fault against a ``fault_runs.Workspace`` and returns its row(s):
what was expected, what happened, what was lost, seconds, ``ok``.

- ``kill -9`` of ``nerft train`` between two checkpoints, then ``--resume latest``: the final adapter is compared
  with an uninterrupted run's (bitwise), the training log must hold every step once;
- SIGTERM of ``nerft train``: exit code 143, a checkpoint at the last finished step, resume to the same adapter;
- ``kill -9`` of ``nerft predict --input --output`` mid-corpus (and a torn last row), then the same command
  again: every input line once, in order, the same bytes as an uninterrupted run;
- a full disk: a tmpfs of a few hundred KiB mounted under the work folder (needs root; else these rows say
  skipped: tests/test_reliability.py injects ENOSPC instead) under prepare, predict and a training checkpoint;
- poisoned inputs: GBK bytes, UTF-16, a binary file, a lone surrogate escape.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fault_runs import (
    CHILD_TIMEOUT_S,
    ENV,
    REPO,
    Workspace,
    adapter_difference,
    checkpoint_steps,
    complete_lines,
    error_lines,
    finish,
    last_line,
    log,
    logged_steps,
    nerft_args,
    row,
    run,
    start,
    wait_until,
)

# -------------------------------------------------------------------------------------------------------- faults


def train_reference(ws: Workspace) -> tuple[Path, float]:
    out = ws.root / "train-reference"
    code, last, seconds = run(*ws.train(out))
    if code != 0:
        raise RuntimeError(f"the uninterrupted training run failed ({code}): {last}")
    return out, seconds


def train_kill9(ws: Workspace, reference: Path) -> dict:
    out = ws.root / "train-kill9"
    kill_at = ws.save_every * 2 + ws.save_every // 2 + 1  # between two checkpoints
    started = time.perf_counter()
    proc = start(*ws.train(out))
    reached = wait_until(proc, lambda: len(logged_steps(out)) >= kill_at)
    proc.send_signal(signal.SIGKILL)
    code, _ = finish(proc)
    done_steps, saved = len(logged_steps(out)), checkpoint_steps(out)
    stale = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] \
        if (out / "checkpoints").is_dir() else []
    resume_code, last, resume_s = run(*ws.train(out, "--resume", "latest"))
    steps = logged_steps(out)
    diff = adapter_difference(reference, out) if resume_code == 0 else {"identical": False, "max_abs_diff": None}
    redone = done_steps - (saved[-1] if saved else 0)
    ok = reached and code == -signal.SIGKILL and resume_code == 0 and diff["identical"] \
        and steps == list(range(1, ws.steps + 1))
    return row("kill -9 of nerft train, then --resume latest",
               "resume from the last checkpoint to the uninterrupted run's adapter; every step logged once",
               f"killed after step {done_steps}, checkpoints {saved}; resume exit {resume_code}; adapter "
               f"{'bitwise identical' if diff['identical'] else 'differs'} (max abs difference {diff['max_abs_diff']}); "
               f"log steps 1..{steps[-1] if steps else 0}, {len(steps) - len(set(steps))} duplicated",
               f"nothing; {redone} steps since the last checkpoint were run again", ok,
               time.perf_counter() - started, resume_seconds=round(resume_s, 1), killed_at_step=done_steps,
               checkpoint_resumed=saved[-1] if saved else None, steps_redone=redone, stale_staging=stale,
               **{f"adapter_{k}": v for k, v in diff.items()}, last_line=last if resume_code else "")


def train_sigterm(ws: Workspace, reference: Path) -> dict:
    out = ws.root / "train-sigterm"
    stop_at = ws.save_every + 2  # not a checkpoint step: the checkpoint must come from the signal
    started = time.perf_counter()
    proc = start(*ws.train(out))
    reached = wait_until(proc, lambda: len(logged_steps(out)) >= stop_at)
    signalled = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code, stderr = finish(proc)
    stop_s = time.perf_counter() - signalled
    done_steps, saved = len(logged_steps(out)), checkpoint_steps(out)
    resume_code, last, resume_s = run(*ws.train(out, "--resume", "latest"))
    steps = logged_steps(out)
    diff = adapter_difference(reference, out) if resume_code == 0 else {"identical": False, "max_abs_diff": None}
    ok = reached and code == 143 and saved and saved[-1] == done_steps and resume_code == 0 and diff["identical"] \
        and steps == list(range(1, ws.steps + 1))
    return row("SIGTERM of nerft train, then --resume latest",
               "exit 143 within a step, a checkpoint at the last finished step, resume to the same adapter",
               f"exit {code} {stop_s:.1f}s after the signal, at step {done_steps}; checkpoints {saved}; resume "
               f"exit {resume_code}; adapter {'bitwise identical' if diff['identical'] else 'differs'}",
               "nothing" if saved and saved[-1] == done_steps else f"{done_steps - (saved[-1] if saved else 0)} steps",
               bool(ok), time.perf_counter() - started, exit_code=code, seconds_to_stop=round(stop_s, 2),
               stopped_at_step=done_steps, checkpoint_steps=saved, resume_seconds=round(resume_s, 1),
               **{f"adapter_{k}": v for k, v in diff.items()},
               message=next((line for line in stderr.splitlines() if "stopped" in line), ""))


def predict_reference(ws: Workspace, model: Path) -> Path:
    out = ws.root / "predict-reference.jsonl"
    code, last, seconds = run(*ws.predict(model, ws.texts, out))
    if code != 0:
        raise RuntimeError(f"the uninterrupted predict run failed ({code}): {last}")
    log(f"uninterrupted predict: {len(complete_lines(out))} documents in {seconds:.1f}s")
    return out


def predict_kill9(ws: Workspace, model: Path, reference: Path, torn: bool) -> dict:
    out = ws.root / f"predict-kill9{'-torn' if torn else ''}.jsonl"
    total = len(complete_lines(reference))
    started = time.perf_counter()
    proc = start(*ws.predict(model, ws.texts, out))
    reached = wait_until(proc, lambda: len(complete_lines(out)) >= total // 3)
    proc.send_signal(signal.SIGKILL)
    code, _ = finish(proc)
    kept = len(complete_lines(out))
    if torn:  # what a kill in the middle of a write leaves: half a row without its newline
        next_row = reference.read_bytes().splitlines()[kept]
        with open(out, "ab") as f:
            f.write(next_row[: len(next_row) // 2])
    rerun_code, last, rerun_s = run(*ws.predict(model, ws.texts, out))
    rows = [json.loads(line) for line in complete_lines(out)]
    ids = [r["id"] for r in rows]
    want = [json.loads(line)["id"] for line in complete_lines(reference)]
    missing, duplicated = len(set(want) - set(ids)), len(ids) - len(set(ids))
    same = out.read_bytes() == reference.read_bytes()
    ok = reached and code == -signal.SIGKILL and rerun_code == 0 and same
    what = "kill -9 of nerft predict mid-corpus" + (" with a torn last row" if torn else "") + ", then rerun"
    return row(what, "the rerun predicts only the rest: every line once, in order, the uninterrupted output",
               f"killed with {kept}/{total} rows written{' + half a row' if torn else ''}; rerun exit {rerun_code} "
               f"in {rerun_s:.1f}s; output {'byte-identical' if same else 'differs'}",
               f"{missing} missing, {duplicated} duplicated", ok, time.perf_counter() - started,
               rows_at_kill=kept, rows=total, missing=missing, duplicated=duplicated, identical=same,
               last_line=last if rerun_code else "")


def poisoned_inputs(ws: Workspace, model: Path) -> list[dict]:
    rows_out: list[dict] = []
    poison = ws.root / "poison"
    poison.mkdir(exist_ok=True)
    source = (ws.root / "corpus.jsonl").read_bytes().decode("utf-8")
    gbk = poison / "corpus-gbk.jsonl"
    gbk.write_bytes(source.encode("gbk"))
    u16 = poison / "corpus-utf16.jsonl"
    u16.write_bytes(source.encode("utf-16"))
    surrogate = poison / "surrogate.jsonl"
    lines = source.splitlines(keepends=True)
    lines[6] = lines[6].replace('"text": "', '"text": "\\ud800', 1)
    surrogate.write_text("".join(lines), encoding="utf-8")
    binary = poison / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 8)
    reference = ws.root / "data"

    def prepared_same(out: Path) -> bool:
        return all((out / f).read_bytes() == (reference / f).read_bytes()
                   for f in ("train.jsonl", "dev.jsonl", "test.jsonl", "labels.json"))

    common = ["--format", "nerft", "--labels", "ccfbdci", "--seed", 0, "--dev", 0.1, "--test", 0.1, "--no-plot"]
    cases = [
        ("GBK bytes, default --encoding", gbk, [], 2, "corpus-gbk.jsonl, line 1: not valid utf-8"),
        ("GBK bytes, --encoding auto", gbk, ["--encoding", "auto"], 0, None),
        ("UTF-16 with BOM, --encoding auto", u16, ["--encoding", "auto"], 0, None),
        ("a lone surrogate escape (\\ud800)", surrogate, [], 2, "surrogate.jsonl, line 7: holds a lone surrogate"),
        ("a binary file, --encoding auto", binary, ["--encoding", "auto"], 2, "cannot detect the encoding"),
    ]
    for name, path, extra, want_code, want_text in cases:
        out = poison / f"prepared-{path.stem}-{len(extra)}"
        started = time.perf_counter()
        proc = subprocess.run(nerft_args("prepare", "--input", path, "--out", out, *common, *extra),
                              capture_output=True, text=True, env=ENV, cwd=REPO, timeout=CHILD_TIMEOUT_S)
        errors = error_lines(proc.stderr)
        if want_code == 0:
            ok = proc.returncode == 0 and prepared_same(out)
            observed = f"exit {proc.returncode}; splits {'identical to' if ok else 'differ from'} the UTF-8 file's"
        else:
            ok = proc.returncode == 2 and len(errors) == 1 and want_text in errors[0] \
                and "Traceback" not in proc.stderr and not out.exists()
            observed = f"exit {proc.returncode}: {errors[0] if errors else last_line(proc.stderr)}"
        rows_out.append(row(f"prepare on {name}", "read like the UTF-8 file" if want_code == 0 else
                            "exit 2, one line naming file and line, nothing written", observed, "nothing" if ok
                            else "see observed", ok, time.perf_counter() - started))
    # predict reads a GBK text file with --encoding auto like its UTF-8 original
    first_texts = "".join(ws.texts.read_text(encoding="utf-8").splitlines(keepends=True)[:40])
    texts_gbk, texts_u8 = poison / "texts-gbk.txt", poison / "texts-utf8.txt"
    texts_gbk.write_bytes(first_texts.encode("gbk"))
    texts_u8.write_text(first_texts, encoding="utf-8")
    started = time.perf_counter()
    run(*ws.predict(model, texts_u8, poison / "pred-utf8.jsonl"))
    refused, refused_line, _ = run(*ws.predict(model, texts_gbk, poison / "pred-refused.jsonl"))
    code, last, _ = run(*ws.predict(model, texts_gbk, poison / "pred-gbk.jsonl", "--encoding", "auto"))
    same = code == 0 and (poison / "pred-gbk.jsonl").read_bytes() == (poison / "pred-utf8.jsonl").read_bytes()
    rows_out.append(row("predict on a GBK text file", "default: exit 2 naming line and byte; --encoding auto: "
                        "the UTF-8 file's output", f"default exit {refused} ({refused_line}); auto exit {code}, "
                        f"output {'identical' if same else 'differs'}", "nothing" if same else "see observed",
                        refused == 2 and same, time.perf_counter() - started))
    return rows_out


# ------------------------------------------------------------------------------------------------------ full disk


class Tmpfs:
    """A tmpfs of ``size`` KiB at ``path`` (root only); ``resize`` grows it; unmounted on exit."""

    def __init__(self, path: Path, size_kib: int):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "nerft-fault", str(path)],
                              capture_output=True, text=True)
        self.mounted = done.returncode == 0
        self.reason = done.stderr.strip() or "mount failed"

    def resize(self, size_kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(self.path)], check=True)

    def free_kib(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize // 1024

    def __enter__(self) -> Tmpfs:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], capture_output=True)


def full_disk(ws: Workspace, reference_run: Path, predictions: Path) -> list[dict]:
    mount = ws.root / "tmpfs"
    faults = ("prepare", "predict", "train checkpoint")
    with Tmpfs(mount, 256) as disk:
        if not disk.mounted:
            return [row(f"full disk during {what}", "exit 2, one line naming the file, nothing lost",
                        f"skipped: cannot mount a tmpfs ({disk.reason}); tests/test_reliability.py injects ENOSPC",
                        "-", True, 0.0, skipped=True) for what in faults]
        return [full_disk_prepare(ws, disk), full_disk_predict(ws, disk, reference_run, predictions),
                full_disk_checkpoint(ws, disk, reference_run)]


def full_disk_prepare(ws: Workspace, disk: Tmpfs) -> dict:
    out = disk.path / "prepared"
    started = time.perf_counter()
    small = ws.root / "small.jsonl"
    small.write_text("".join((ws.root / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:40]),
                     encoding="utf-8")
    first, _, _ = run("prepare", "--input", small, "--out", out, "--no-plot", "--labels", "ccfbdci")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from nerft.jsonl import write_jsonl
    from nerft.resources.demo_corpus import generate_corpus

    big = ws.root / "big.jsonl"
    write_jsonl(big, generate_corpus(2000, seed=2))  # its splits need more than the disk has
    proc = subprocess.run(nerft_args("prepare", "--input", big, "--out", out, "--no-plot", "--labels", "ccfbdci",
                                     "--seed", 1), capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=CHILD_TIMEOUT_S)
    errors = error_lines(proc.stderr)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    leftovers = sorted(p.name for p in disk.path.iterdir() if p.name != "prepared")
    ok = first == 0 and proc.returncode == 2 and len(errors) == 1 and "No space left" in errors[0] \
        and after == before and not leftovers
    return row("full disk during nerft prepare (256 KiB tmpfs, a previous output in place)",
               "exit 2, one line; the previous folder unchanged, no staging folder left",
               f"exit {proc.returncode}: {errors[0] if errors else last_line(proc.stderr)}; its files "
               f"{'byte-identical afterwards' if after == before else 'CHANGED'}; leftovers {leftovers or 'none'}",
               "nothing" if after == before else "the previous output", ok, time.perf_counter() - started)


def full_disk_predict(ws: Workspace, disk: Tmpfs, model: Path, reference: Path) -> dict:
    for p in disk.path.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out = disk.path / "predictions.jsonl"
    filler = disk.path / "filler"
    room = max(reference.stat().st_size // 3, 4096)  # a third of the output fits
    filler.write_bytes(b"\0" * max(disk.free_kib() * 1024 - room, 0))
    started = time.perf_counter()
    proc = subprocess.run(nerft_args(*ws.predict(model, ws.texts, out)), capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=CHILD_TIMEOUT_S)
    errors = error_lines(proc.stderr)
    kept = len(complete_lines(out))
    filler.unlink()  # space again
    rerun, last, _ = run(*ws.predict(model, ws.texts, out))
    same = rerun == 0 and out.read_bytes() == reference.read_bytes()
    ok = proc.returncode == 2 and len(errors) == 1 and "No space left" in errors[0] and str(out) in errors[0] \
        and same
    return row("full disk during nerft predict, then free space and rerun",
               "exit 2, one line naming the output; the rerun completes it to the uninterrupted output",
               f"exit {proc.returncode} with {kept} rows on disk: {errors[0] if errors else last_line(proc.stderr)}; "
               f"rerun exit {rerun}, output {'byte-identical' if same else 'differs'}",
               "nothing" if same else "see observed", ok, time.perf_counter() - started, rows_at_failure=kept)


def full_disk_checkpoint(ws: Workspace, disk: Tmpfs, reference: Path) -> dict:
    for p in disk.path.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    checkpoints = [f for f in (reference / "checkpoints").rglob("*") if f.is_file()]
    checkpoint_kib = sum(f.stat().st_size for f in checkpoints) // max(len(checkpoint_steps(reference)), 1) // 1024
    fixed_kib = sum(f.stat().st_size for f in reference.rglob("*")
                    if f.is_file() and "checkpoints" not in f.parts and "adapter" not in f.parts) // 1024
    disk.resize(fixed_kib + checkpoint_kib * 3 // 2 + 64)  # the first checkpoint fits, the second does not
    out = disk.path / "run"
    started = time.perf_counter()
    proc = subprocess.run(nerft_args(*ws.train(out)), capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=CHILD_TIMEOUT_S)
    errors = error_lines(proc.stderr)
    saved = checkpoint_steps(out)
    stale = [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("step-")] \
        if (out / "checkpoints").is_dir() else []
    disk.resize(fixed_kib + checkpoint_kib * 4 + 4096)
    resume, last, _ = run(*ws.train(out, "--resume", "latest"))
    diff = adapter_difference(reference, out) if resume == 0 else {"identical": False, "max_abs_diff": None}
    ok = proc.returncode == 2 and len(errors) == 1 and "No space left" in errors[0] and saved and not stale \
        and resume == 0 and diff["identical"]
    return row(f"full disk while checkpointing nerft train ({fixed_kib + checkpoint_kib * 3 // 2 + 64} KiB tmpfs), "
               "then more space and --resume latest",
               "exit 2, one line naming the checkpoint; earlier checkpoints intact; resume to the same adapter",
               f"exit {proc.returncode}: {errors[0] if errors else last_line(proc.stderr)}; checkpoints {saved}, "
               f"partial ones {stale or 'none'}; resume exit {resume}; adapter "
               f"{'bitwise identical' if diff['identical'] else 'differs'}",
               "nothing" if ok else "see observed", bool(ok), time.perf_counter() - started,
               last_line=last if resume else "")
