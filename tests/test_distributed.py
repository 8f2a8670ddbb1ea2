"""The distributed path: `torchrun --nproc_per_node 2 -m nerft train` on CPU (gloo), tiny model, a few steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from nerft_helpers import char_tokenizer, save_base_model, write_splits

from nerft.train import OptimConfig, build_schedule

pytestmark = pytest.mark.integration  # real torchrun processes


def test_two_process_gloo_run(tmp_path):
    base = save_base_model(tmp_path / "base", char_tokenizer())
    splits = write_splits(tmp_path / "data", n_train=32, n_dev=4)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nerft", "train", "--model", str(base), "--train", splits["train"], "--dev", splits["dev"],
           "--labels", splits["labels"], "--out", str(out), "--max-steps", "3", "--optim.batch-size", "4",
           "--optim.grad-accum", "2", "--eval.every", "3", "--eval.max-new-tokens", "4",
           "--tracking.backend", "none", "--tracking.log-every", "1", "--output.save-every", "2", "--model.device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # A session of its own, so that a hang is cleaned up with the worker processes, not just the launcher.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the 2-process run did not finish in 120 s")
    assert proc.returncode == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["train"]["steps"] == 3
    assert "best_f1" in metrics["dev"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "checkpoints" / "step-2" / "trainer_state.json").is_file()
    # rank 0 alone writes the log: one line per step, not two
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    # the learning rate follows the one-process schedule (a scheduler stepped once per process would run ahead)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=OptimConfig().lr)
    scheduler = build_schedule(optimizer, OptimConfig(), 3)
    expected = []
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        expected.append(scheduler.get_last_lr()[0])
    assert [r["lr"] for r in log if "loss" in r] == pytest.approx(expected)
    assert expected[1] > 0  # not a schedule that is already over
