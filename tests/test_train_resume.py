"""A stop signal during a dev evaluation, and folders beside the checkpoints: resume is the uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal

import pytest
import torch
from nerft_helpers import char_tokenizer, save_base_model, tiny_recipe, write_splits

from nerft import config as cfglib
from nerft.train import TrainConfig, TrainingInterrupted, train
from nerft.train.checkpoint import find_resume_checkpoint, list_checkpoints


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return save_base_model(tmp_path_factory.mktemp("base"), char_tokenizer())


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("data"))


def _recipe(base_model, splits, out, resume=None):
    common = {"optim__max_steps": 6, "eval__every": 2, "tracking__log_every": 1, "tune__enabled": False}
    recipe = tiny_recipe(base_model, splits, out, **common)
    return cfglib.from_dict(TrainConfig, recipe | ({"resume": resume} if resume else {}))


def _dev_steps(run_dir) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "dev/f1" in r]


def _adapter(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_sigterm_during_a_dev_evaluation_resumes_to_the_uninterrupted_run(base_model, splits, tmp_path,
                                                                           monkeypatch, caplog):
    import nerft.train.evaluation as loop  # the generative task's dev prediction, looked up at each evaluation

    real = loop.predict_documents
    calls = {"n": 0}

    def signalling_predict(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the dev evaluation after step 4: a real SIGTERM to this process, mid-evaluation
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "predict_documents", signalling_predict)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(_recipe(base_model, splits, out))
    state = json.loads((out / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["eval_pending"] is True  # stopped inside the evaluation of step 4
    monkeypatch.setattr(loop, "predict_documents", real)
    shutil.copytree(out / "checkpoints" / "step-4", out / "checkpoints" / "step-4.bak")  # a user's backup
    with caplog.at_level(logging.WARNING, logger="nerft.train"):
        train(_recipe(base_model, splits, out, resume="latest"))
    assert "step-4.bak" in caplog.text
    straight = train(_recipe(base_model, splits, tmp_path / "straight"))
    assert _dev_steps(out) == _dev_steps(straight) == [2, 4, 6]  # the interrupted evaluation was made
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text())["dev"] for d in (out, straight))
    assert resumed == uninterrupted
    for k, v in _adapter(straight).items():
        assert torch.allclose(v, _adapter(out)[k], atol=1e-6), k


def test_folders_beside_the_checkpoints_are_ignored_and_named(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    for name in ("step-40", "step-40.bak", "step-7", "step-x", "step-", ".step-50.abcd.tmp"):
        (ckpts / name).mkdir(parents=True)
        (ckpts / name / "trainer_state.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="nerft.train"):
        assert [p.name for p in list_checkpoints(tmp_path)] == ["step-7", "step-40"]
        assert find_resume_checkpoint("latest", tmp_path).name == "step-40"
    assert "step-40.bak" in caplog.text and "step-x" in caplog.text
