"""Label sets: two labels may not share a display name, nor may a name be another label's code (an answer names
a label by its name, so one of the two could never be predicted). Refused wherever a label set is read."""

from __future__ import annotations

import json

import pytest

from nerft.cli import main
from nerft.labels import Label, LabelSet, load_label_set
from nerft.schema import NerftError

SAME_NAME = "labels:\n  - {code: PER, name: 人名}\n  - {code: ORG, name: 人名}\n  - {code: GPE, name: 地理实体}\n"


def test_two_labels_of_one_name_are_refused_naming_both_codes(tmp_path):
    with pytest.raises(NerftError, match="labels PER and ORG have the same name '人名'"):
        LabelSet([Label("PER", "人名"), Label("ORG", "人名")])
    with pytest.raises(NerftError, match="label ORG is named 'PER', the code of label PER"):
        LabelSet([Label("PER", "人名"), Label("ORG", "PER")])
    bad = tmp_path / "labels.yaml"
    bad.write_text(SAME_NAME, encoding="utf-8")
    with pytest.raises(NerftError, match=f"{bad}: labels PER and ORG"):
        load_label_set(str(bad))
    # a name equal to its own code, and names that differ, are fine
    assert LabelSet([Label("PER", "PER"), Label("ORG", "组织")]).to_code("组织") == "ORG"


def test_every_command_that_reads_a_label_set_refuses_it(tmp_path, capsys):
    bad = tmp_path / "labels.yaml"
    bad.write_text(SAME_NAME, encoding="utf-8")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "张三在北京", "entities": [
        {"start": 0, "end": 2, "label": "PER", "text": "张三"}]}, ensure_ascii=False) + "\n", encoding="utf-8")
    commands = [["prepare", "--input", str(docs), "--labels", str(bad), "--out", str(tmp_path / "p")],
                ["evaluate", "--gold", str(docs), "--pred", str(docs), "--labels", str(bad), "--out", str(tmp_path / "e")],
                ["train", "--train", str(docs), "--labels", str(bad), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "run")]]
    for args in commands:
        assert main(args) == 2, args
        assert "labels PER and ORG have the same name" in capsys.readouterr().err, args
    run = tmp_path / "folder"  # a model folder whose nerft.json carries such a set
    run.mkdir()
    (run / "nerft.json").write_text(json.dumps({"labels": {"labels": [{"code": "PER", "name": "人名"},
                                                                       {"code": "ORG", "name": "人名"}]},
                                                "prompt": {"system": "s"}}), encoding="utf-8")
    assert main(["predict", "--model", str(run), "张三"]) == 2
    assert "labels PER and ORG have the same name" in capsys.readouterr().err
