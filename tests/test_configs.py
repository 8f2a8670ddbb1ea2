"""Every shipped config parses, starts with the command that runs it, and says what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nerft import config as cfglib
from nerft.demo import train_recipe
from nerft.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_parses_and_documents_its_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#")
    assert "nerft " in path.read_text(encoding="utf-8").split("\nmodel:")[0]
    cfg = cfglib.build_config(TrainConfig, config_path=str(path))
    built = cfglib.to_dict(cfg)
    for dotted, value in _leaves(yaml.safe_load(path.read_text(encoding="utf-8"))):
        got = _get(built, dotted)
        if isinstance(value, str) and isinstance(got, str) and Path(got).is_absolute() and not Path(value).is_absolute():
            assert Path(got) == (path.parent / value).resolve(), dotted  # a path read relative to the file
        elif isinstance(value, bool) and dotted == "optim.autocast":
            assert got == ("on" if value else "off"), dotted  # YAML 1.1's unquoted off
        else:
            assert got == value, f"{dotted}: the file says {value!r}, the config holds {got!r}"


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def test_there_are_the_four_recipes():
    names = {p.name for p in TRAIN_CONFIGS}
    assert names >= {"tutorial-qwen2-1.5b-ccfbdci.yaml", "qwen2-1.5b-ccfbdci.yaml", "qwen2.5-0.5b-cpu.yaml",
                     "demo.yaml"}


def test_tutorial_recipe_is_the_tutorials():
    cfg = cfglib.build_config(TrainConfig, config_path=str(CONFIGS / "tutorial-qwen2-1.5b-ccfbdci.yaml"))
    assert cfg.model.name_or_path == "Qwen/Qwen2-1.5B-Instruct"
    assert (cfg.data.prompt_style, cfg.data.output_format, cfg.data.end_token) == ("tutorial", "tutorial", "pad")
    assert (cfg.data.max_length, cfg.data.overlong) == (384, "truncate")
    assert (cfg.optim.batch_size, cfg.optim.grad_accum, cfg.optim.epochs, cfg.optim.lr) == (4, 4, 2, 1e-4)
    assert cfg.optim.gradient_checkpointing
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, len(cfg.lora.target_modules)) == (8, 32, 0.1, 7)
    assert cfg.tracking.backend == "swanlab"
    # what nerft's defaults add, switched off: the tutorial trains on every document and decodes as answered
    assert cfg.data.empty_share is None and not cfg.tune.enabled


def test_cpu_recipe_follows_the_measurements():
    cfg = cfglib.build_config(TrainConfig, config_path=str(CONFIGS / "qwen2.5-0.5b-cpu.yaml"))
    assert cfg.model.name_or_path.endswith("qwen2.5-coder-0.5b-instruct")
    assert cfg.model.dtype == "fp32" and not cfg.optim.gradient_checkpointing
    assert cfg.data.output_format == "compact" and cfg.data.prompt_style == "nerft" and cfg.data.group_by_length
    assert cfg.optim.batch_size * cfg.optim.grad_accum == 8 and cfg.optim.lr == 5e-4
    assert cfg.optim.autocast == "auto" and cfg.data.empty_share == 0.5 and cfg.lora.top_layers is None


@pytest.mark.parametrize("name", ["qwen2.5-0.5b-cpu.yaml", "qwen2-1.5b-ccfbdci.yaml"])
def test_nerft_recipes_use_the_rich_prompt_with_a_shared_prefix(name, monkeypatch, tmp_path):
    # the learning curve's best prompt: LOC/GPE definitions and 4 worked examples, computed once per micro-batch
    from nerft.labels import ccfbdci_labels, load_label_set
    from nerft.train.data import check_shared_prefix

    monkeypatch.chdir(tmp_path)  # the labels file is named relative to the recipe, so any working directory works
    cfg = cfglib.build_config(TrainConfig, config_path=str(CONFIGS / name))
    assert cfg.data.shared_prefix and cfg.data.describe_labels and cfg.data.examples_in_prompt == 4
    check_shared_prefix(cfg)  # no packing, no gradient checkpointing: a shipped recipe must not be refused
    labels = load_label_set(cfg.data.labels)
    assert [(x.code, x.name) for x in labels.labels] == [(x.code, x.name) for x in ccfbdci_labels().labels]
    described = {x.code: x.description for x in labels.labels}
    assert "山" in described["LOC"] and "国家" in described["GPE"]
    assert cfg.data.max_length >= 768


def test_demo_yaml_is_the_demos_recipe():
    shipped = cfglib.to_dict(cfglib.build_config(TrainConfig, config_path=str(CONFIGS / "demo.yaml")))
    in_code = cfglib.to_dict(cfglib.from_dict(TrainConfig, train_recipe(
        "demo_out/base-model", "demo_out/data", "demo_out/run")))
    assert shipped == in_code


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs(stage):
    path = CONFIGS / "deepspeed" / f"zero{stage}.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ") and "accelerate launch --config_file" in text
    data = yaml.safe_load(text)
    assert data["distributed_type"] == "DEEPSPEED" and data["deepspeed_config"]["zero_stage"] == stage


def test_a_config_names_input_paths_relative_to_itself(tmp_path, monkeypatch):
    # inputs (opt(path=True)) found beside the YAML file become absolute; built-in names, hub ids, paths that only
    # exist from the working directory and outputs stay as written
    from nerft.evaluate import EvaluateConfig

    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "train.jsonl").write_text("", encoding="utf-8")
    (conf / "labels.yaml").write_text("labels: []\n", encoding="utf-8")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "dev.jsonl").write_text("", encoding="utf-8")
    (conf / "run.yaml").write_text(
        "model: {name_or_path: Qwen/Qwen2-1.5B-Instruct}\n"
        "data: {train: data/train.jsonl, dev: data/dev.jsonl, labels: labels.yaml}\n"
        "output: {dir: data}\n", encoding="utf-8")
    monkeypatch.chdir(work)
    cfg = cfglib.build_config(TrainConfig, config_path=str(conf / "run.yaml"))
    assert cfg.data.train == str((conf / "data" / "train.jsonl").resolve())
    assert cfg.data.labels == str((conf / "labels.yaml").resolve())
    assert cfg.data.dev == "data/dev.jsonl"  # not beside the config: the working directory's, as before
    assert cfg.model.name_or_path == "Qwen/Qwen2-1.5B-Instruct" and cfg.output.dir == "data"
    # a flag on the command line is the working directory's, even when the config's folder has the same name
    flagged = cfglib.build_config(TrainConfig, {"data.train": "data/train.jsonl"}, config_path=str(conf / "run.yaml"))
    assert flagged.data.train == "data/train.jsonl"
    (conf / "eval.yaml").write_text("gold: data/train.jsonl\nlabels: ccfbdci\n", encoding="utf-8")
    ev = cfglib.build_config(EvaluateConfig, config_path=str(conf / "eval.yaml"))
    assert ev.gold == str((conf / "data" / "train.jsonl").resolve()) and ev.labels == "ccfbdci"
