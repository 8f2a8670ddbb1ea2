"""Typed configuration (nerft.config) and label sets (nerft.labels)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from nerft.config import (
    ConfigError,
    add_config_arguments,
    build_config,
    from_dict,
    load_yaml,
    opt,
    to_dict,
)
from nerft.labels import BUILTIN_LABEL_SETS, Label, LabelSet, ccfbdci_labels, cluener_labels, load_label_set
from nerft.schema import NerftError


@dataclass
class LoraSection:
    rank: int = opt(8, "LoRA rank")
    dropout: float = opt(0.05, "LoRA dropout")
    targets: list[str] = opt(help="modules to adapt", factory=lambda: ["q_proj", "v_proj"])


@dataclass
class ToyConfig:
    model: str = opt("Qwen/Qwen2-0.5B-Instruct", "base model")
    epochs: int = opt(2, "training epochs")
    lr: float = opt(1e-4, "learning rate")
    bf16: bool = opt(False, "use bfloat16")
    style: Literal["json", "lines"] = opt("json", "answer format")
    max_steps: int | None = opt(None, "stop after N steps")
    lora: LoraSection = opt(help="LoRA", factory=LoraSection)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toy")
    add_config_arguments(parser, ToyConfig)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------- config


def test_defaults_and_round_trip():
    cfg = from_dict(ToyConfig, {})
    assert cfg.lora.targets == ["q_proj", "v_proj"] and cfg.max_steps is None
    assert from_dict(ToyConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "key"),
    [({"epoch": 3}, "epoch"), ({"lora": {"rnak": 4}}, "lora.rnak")],
)
def test_unknown_key_error_names_the_key(data, key):
    with pytest.raises(ConfigError, match=f"unknown config key\\(s\\) {key};") as info:
        from_dict(ToyConfig, data)
    assert "known keys here" in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epochs": "two"}, "'epochs' must be an integer"),
        ({"epochs": True}, "'epochs' must be an integer"),
        ({"lr": "fast"}, "'lr' must be a number"),
        ({"bf16": "maybe"}, "'bf16' must be true or false"),
        ({"style": "xml"}, "'style' must be one of json, lines"),
        ({"model": None}, "'model' must not be null"),
        ({"model": ["a"]}, "'model' must be a string"),
        ({"lora": 3}, "'lora' must be a mapping"),
        ({"lora": {"rank": 2.5}}, "'lora.rank' must be an integer"),
        ({"lora": {"targets": 5}}, "'lora.targets' must be a list"),
    ],
)
def test_wrong_type_error_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ToyConfig, data)


def test_gentle_conversions():
    cfg = from_dict(ToyConfig, {"epochs": "3", "lr": "2e-5", "bf16": "yes", "max_steps": 10.0,
                                "lora": {"targets": "q_proj,k_proj"}})
    assert (cfg.epochs, cfg.lr, cfg.bf16, cfg.max_steps) == (3, 2e-5, True, 10)
    assert cfg.lora.targets == ["q_proj", "k_proj"]


def test_an_unquoted_off_in_yaml_is_the_choice_off(tmp_path):
    from nerft.train import TrainConfig

    path = tmp_path / "recipe.yaml"
    path.write_text("optim:\n  autocast: off\n")  # YAML 1.1 reads this as false
    assert build_config(TrainConfig, {}, config_path=str(path)).optim.autocast == "off"
    with pytest.raises(ConfigError, match="must be one of off, bf16, auto, got True"):
        from_dict(TrainConfig, {"optim": {"autocast": True}})  # there is no "on" to read it as


def test_yaml_then_cli_override_precedence(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("# nerft train --config toy.yaml\nepochs: 5\nlr: 3.0e-4\nlora:\n  rank: 16\n  dropout: 0.1\n")
    base = {"model": "base-from-code", "epochs": 1}
    args = parse(["--epochs", "7", "--lora.rank", "4", "--bf16"])
    cfg = build_config(ToyConfig, args, config_path=str(path), base=base)
    assert cfg.model == "base-from-code"  # base survives when nothing overrides it
    assert cfg.epochs == 7 and cfg.lora.rank == 4  # flags beat the file
    assert cfg.lr == 3e-4 and cfg.lora.dropout == 0.1  # the file beats defaults
    assert cfg.bf16 is True and cfg.style == "json"
    assert build_config(ToyConfig, parse([]), config_path=str(path)).epochs == 5  # unset flags do not override


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(bad)
    bad.write_text("")
    assert load_yaml(bad) == {}
    bad.write_text("lora:\n  alpha: 3\n")
    with pytest.raises(ConfigError, match="lora.alpha"):
        build_config(ToyConfig, parse([]), config_path=str(bad))


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--epochs", "--lr", "--bf16", "--no-bf16", "--style", "--max-steps", "--lora.rank",
                 "--lora.dropout", "--lora.targets"):
        assert flag in text
    assert "LoRA rank (default: 8)" in text and "{json,lines}" in text


def test_cli_list_and_choice_flags():
    args = parse(["--lora.targets", "q_proj", "o_proj", "--style", "lines"])
    cfg = build_config(ToyConfig, args)
    assert cfg.lora.targets == ["q_proj", "o_proj"] and cfg.style == "lines"
    with pytest.raises(SystemExit):
        parse(["--style", "xml"])


def test_prepare_help_lists_its_options(capsys):
    from nerft.cli import main

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = capsys.readouterr().out
    for flag in ("--input", "--out", "--input-format", "--labels", "--seed", "--dev-share", "--test-share", "--keep-split",
                 "--skip-invalid", "--reject-overlaps", "--config", "--unknown-labels"):
        assert flag in text


# ----------------------------------------------------------------------------------------------------- labels


def test_builtin_label_sets():
    ccf = ccfbdci_labels()
    assert ccf.codes == ["LOC", "PER", "GPE", "ORG"] and ccf.name_of("PER") == "人名"
    assert len(cluener_labels()) == 10 and set(BUILTIN_LABEL_SETS) == {"ccfbdci", "cluener", "weibo"}
    assert load_label_set("cluener").codes == cluener_labels().codes


def test_to_code_accepts_codes_and_names_case_insensitively():
    labels = LabelSet([Label("PER", "人名"), Label("org", "Organisation")])
    assert labels.to_code("人名") == "PER" and labels.to_code(" per ") == "PER"
    assert labels.to_code("ORGANISATION") == "org" and labels.to_code("ORG") == "org"
    assert labels.to_code("CITY") is None
    assert "PER" in labels and "人名" not in labels and labels.name_of("CITY") == "CITY"


@pytest.mark.parametrize(
    "data",
    [
        {"labels": [{"code": "PER", "name": "人名", "description": "people"}, {"code": "LOC"}]},
        [{"code": "PER", "name": "人名", "description": "people"}, {"code": "LOC"}],
        {"PER": {"name": "人名", "description": "people"}, "LOC": None},
    ],
)
def test_from_dict_shapes(data):
    labels = LabelSet.from_dict(data)
    assert labels.codes == ["PER", "LOC"] and labels.names == ["人名", "LOC"]
    assert labels.labels[0].description == "people"
    assert LabelSet.from_dict(labels.to_dict()).labels == labels.labels


@pytest.mark.parametrize(
    ("data", "message"),
    [([], "at least one label"), (["PER", "PER"], "appears twice"), ([{"code": "A", "colour": "red"}], "colour"),
     ([3], "must be a string or an object"), ("PER", "expected a list or a mapping")],
)
def test_from_dict_errors(data, message):
    with pytest.raises(NerftError, match=message):
        LabelSet.from_dict(data)


def test_label_files(tmp_path):
    yaml_file = tmp_path / "labels.yaml"
    yaml_file.write_text("- PER\n- {code: LOC, name: 地点}\n", encoding="utf-8")
    json_file = tmp_path / "labels.json"
    json_file.write_text(json.dumps({"labels": ["PER", "LOC"]}))
    assert load_label_set(str(yaml_file)).names == ["PER", "地点"]
    assert LabelSet.from_file(json_file).codes == ["PER", "LOC"]
    json_file.write_text("{broken")
    with pytest.raises(NerftError, match="not valid JSON"):
        LabelSet.from_file(json_file)
    with pytest.raises(NerftError, match="cannot read label file"):
        LabelSet.from_file(tmp_path / "absent.yaml")
    with pytest.raises(NerftError, match="neither a built-in"):
        load_label_set("no-such-set")


def test_subset_and_infer():
    ccf = ccfbdci_labels()
    assert ccf.subset(["PER", "ORG"]).codes == ["PER", "ORG"]
    with pytest.raises(NerftError, match="unknown label"):
        ccf.subset(["CITY"])
    inferred = LabelSet.infer(["PER", "X", "PER", "company"])
    assert inferred.codes == ["PER", "X", "company"]
    assert inferred.name_of("PER") == "人名" and inferred.name_of("company") == "公司" and inferred.name_of("X") == "X"
    with pytest.raises(NerftError, match="no entities"):
        LabelSet.infer([])
