"""Damaged or tampered run folders: one line naming the file and the problem, exit status 2, never a traceback,
a hang or a run that goes on with nonsense (real files: a tiny run stopped at a checkpoint, then damaged)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from nerft_helpers import char_tokenizer, save_base_model, tiny_recipe, write_splits

from nerft import config as cfglib
from nerft.cli import main
from nerft.schema import NerftError
from nerft.train import TrainConfig, train


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped after 2 of 4 steps: RUN/adapter (the best at step 2) and checkpoints/step-2."""
    root = tmp_path_factory.mktemp("damaged")
    base = save_base_model(root / "base", char_tokenizer())
    splits = write_splits(root / "data")
    recipe = tiny_recipe(base, splits, root / "run", tune__enabled=False) | {"stop_after_steps": 2}
    train(cfglib.from_dict(TrainConfig, recipe))
    return root, recipe


def _copy(stopped_run, tmp_path):
    root, recipe = stopped_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    return run, {**recipe, "output": {"dir": str(run)}, "resume": "latest"}


def _edit_json(path, change):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


ADAPTER_DAMAGE = {
    "catastrophic regex": (lambda run: _edit_json(run / "adapter" / "adapter_config.json",
                                                  lambda c: {**c, "target_modules": "(.*.*)*q_proj_x"}),
                           "cannot put the adapter"),  # it matches no module: resolved in no time, refused
    "r 0": (lambda run: _edit_json(run / "adapter" / "adapter_config.json", lambda c: {**c, "r": 0}),
            "r must be a positive integer"),
    "truncated weights": (lambda run: (run / "adapter" / "adapter_model.safetensors").write_bytes(
        (run / "adapter" / "adapter_model.safetensors").read_bytes()[:-100]), "is damaged or truncated"),
    "base is not a model": (lambda run: _edit_json(run / "nerft.json",
                                                   lambda c: {**c, "base_model": {"name_or_path": "/etc"}}),
                            "holds no config.json: not a model"),
    **{f"nerft.json holding {value}": (lambda run, value=value: (run / "nerft.json").write_text(value),
                                       "a JSON object is expected") for value in ("[]", "5", "null")},
    "empty tokenizer.json": (lambda run: (run / "tokenizer" / "tokenizer.json").write_text(""),
                             "cannot load the tokenizer in"),
}


@pytest.mark.timeout(60)  # the catastrophic pattern used to spin in peft's re.fullmatch for ever
@pytest.mark.parametrize("damage", ADAPTER_DAMAGE)
def test_a_damaged_model_folder_is_one_line(stopped_run, tmp_path, capsys, damage):
    run, _ = _copy(stopped_run, tmp_path)
    spoil, words = ADAPTER_DAMAGE[damage]
    spoil(run)
    assert main(["predict", "--model", str(run), "张三在北京"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error" in line]) == 1 and words in err[-1], err[-3:]
    assert "Traceback" not in "\n".join(err)


def test_a_regular_expression_as_target_modules_loads_as_the_names_it_matches(stopped_run, tmp_path, capsys):
    """ms-swift and others save target_modules as a pattern: it is matched with a time limit, then given to peft
    as names, so the adapter answers exactly as with its list."""
    run, _ = _copy(stopped_run, tmp_path)
    args = ["predict", "--model", str(run), "--output-format", "nerft", "--max-new-tokens", "6", "张三在北京。"]
    assert main(args) == 0
    listed = capsys.readouterr().out
    config = run / "adapter" / "adapter_config.json"
    names = json.loads(config.read_text())["target_modules"]
    _edit_json(config, lambda c: {**c, "target_modules": rf"model\.layers\.\d+\..*\.({'|'.join(names)})"})
    assert main(args) == 0
    assert capsys.readouterr().out == listed


def _state(run):
    return run / "checkpoints" / "step-2" / "trainer_state.json"


STATE_DAMAGE = {
    "garbage rng": (lambda s: {**s, "rng": {"python": [3, [1, 2], None], "numpy": "x"}}, "random-number state"),
    "empty scheduler": (lambda s: {**s, "scheduler": {}}, "scheduler must be an object"),
    "not an object": (lambda s: [1, 2, 3], "is not a JSON object"),
    "infinite step": (lambda s: {**s, "step": math.inf}, "step must be a non-negative integer"),
    "best_f1 a string": (lambda s: {**s, "best_f1": "x"}, "best_f1 must be a number"),
}


@pytest.mark.parametrize("damage", STATE_DAMAGE)
def test_a_tampered_checkpoint_is_refused_before_it_is_applied(stopped_run, tmp_path, damage):
    run, recipe = _copy(stopped_run, tmp_path)
    change, words = STATE_DAMAGE[damage]
    _edit_json(_state(run), change)  # json.dumps writes inf as Infinity, as a hand edit of 1e400 reads back
    with pytest.raises(NerftError, match=words):
        train(cfglib.from_dict(TrainConfig, recipe))
    assert not (run / "metrics.json").exists() or "Infinity" not in (run / "metrics.json").read_text()


def test_an_unknown_tensor_in_a_checkpoint_is_refused(stopped_run, tmp_path):
    from safetensors.torch import load_file, save_file

    run, recipe = _copy(stopped_run, tmp_path)
    path = run / "checkpoints" / "step-2" / "trainer_state.safetensors"
    tensors = load_file(str(path))
    tensors["optimizer.x.exp_avg"] = next(iter(tensors.values())).clone()
    save_file(tensors, str(path))
    with pytest.raises(NerftError, match="unknown tensor 'optimizer.x.exp_avg'"):
        train(cfglib.from_dict(TrainConfig, recipe))


def test_the_undamaged_copy_resumes(stopped_run, tmp_path):
    run, recipe = _copy(stopped_run, tmp_path)
    train(cfglib.from_dict(TrainConfig, recipe))
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 4
