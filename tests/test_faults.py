"""End to end: ``nerft`` killed, stopped, starved of disk and fed poisoned files as real child processes, then
checked for what was lost (nothing). Marked ``e2e``: not in the default run (about 2 minutes on 2 cores);
``python -m pytest -m e2e`` runs them, ``NERFT_FAULT_REPORT=benchmarks/results`` also writes their table
(fault_harness.{json,md}, quoted by docs/reliability.md) once every fault has run.

The faults themselves are in tests/faults.py, the child processes and the workspace in tests/fault_runs.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import fault_runs
import faults
import pytest

pytestmark = pytest.mark.e2e

SETTINGS = {"docs": 240, "steps": 20, "save_every": 5,
            "model": "demo tiny random Qwen2, hidden 64, 2 layers, char tokenizer"}
ORDER = ["train_kill9", "train_sigterm", "predict_kill9", "predict_kill9_torn", "full_disk", "poisoned_inputs"]
# the tests below record their rows under these names; the report is written when all of them have


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The workspace, an uninterrupted training run and its predictions (the references), and the rows recorded."""
    started = time.perf_counter()
    root = tmp_path_factory.mktemp("faults")
    fault_runs._SHORTEN[f"{root}/"] = "WORK/"
    ws = fault_runs.Workspace(root, SETTINGS["docs"], SETTINGS["steps"], SETTINGS["save_every"])
    run, reference_s = faults.train_reference(ws)
    state = {"ws": ws, "run": run, "predictions": faults.predict_reference(ws, run), "rows": {}}
    yield state
    out = os.environ.get("NERFT_FAULT_REPORT")
    if out and len(state["rows"]) == len(ORDER):
        rows = [r for name in sorted(state["rows"], key=ORDER.index) for r in state["rows"][name]]
        fault_runs.write_report(Path(out), rows, SETTINGS, reference_s, time.perf_counter() - started)



def record(harness, name: str, rows: list[dict]) -> None:
    harness["rows"][name] = rows
    failed = [f"{r['fault']}: {r['observed']} (lost: {r['lost']})" for r in rows if not r["ok"]]
    assert not failed, "\n".join(failed)


def test_kill9_of_train_resumes_to_the_uninterrupted_adapter(harness):
    record(harness, "train_kill9", [faults.train_kill9(harness["ws"], harness["run"])])


def test_sigterm_of_train_checkpoints_and_resumes_to_the_same_adapter(harness):
    record(harness, "train_sigterm", [faults.train_sigterm(harness["ws"], harness["run"])])


def test_kill9_of_predict_then_rerun_gives_every_line_once(harness):
    rows = [faults.predict_kill9(harness["ws"], harness["run"], harness["predictions"], torn=False)]
    record(harness, "predict_kill9", rows)


def test_kill9_of_predict_with_a_torn_row_then_rerun_gives_every_line_once(harness):
    rows = [faults.predict_kill9(harness["ws"], harness["run"], harness["predictions"], torn=True)]
    record(harness, "predict_kill9_torn", rows)


def test_full_disk_fails_with_one_line_and_loses_nothing(harness):
    rows = faults.full_disk(harness["ws"], harness["run"], harness["predictions"])
    record(harness, "full_disk", rows)
    if all(r.get("skipped") for r in rows):
        pytest.skip(rows[0]["observed"])


def test_poisoned_inputs_fail_with_one_line_or_read_as_utf8(harness):
    record(harness, "poisoned_inputs", faults.poisoned_inputs(harness["ws"], harness["run"]))
