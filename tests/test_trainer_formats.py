"""Other trainers: ``prepare --export-format`` writes the exact conversations nerft trains on (for LLaMA-Factory and
ms-swift), and ``evaluate`` scores their prediction files (samples written by hand in the layouts LLaMA-Factory's
``save_predictions`` and ``swift infer --result_path`` write)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerft import cli
from nerft.evaluate import EvaluateConfig, evaluate
from nerft.formats import get_format
from nerft.jsonl import write_jsonl
from nerft.labels import ccfbdci_labels
from nerft.prepare import PrepareConfig, prepare
from nerft.prepare.trainer_formats import (
    SftExportConfig,
    conversation,
    detect_prediction_format,
    export_prompt,
    read_trainer_predictions,
)
from nerft.prompts import build_prompt
from nerft.schema import Document, Entity, InputError

LABELS = ccfbdci_labels()
DOCS = [
    Document("a", "张三去北京", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")]),
    Document("b", "嗯。", []),
    Document("c", "南国的风，南国的雨", [Entity(5, 7, "LOC", "南国")]),
]


def sft_file(tmp_path: Path, n: int = 40) -> Path:
    """A chinese_ner_sft file: every other document has two entities."""
    rows = []
    for k in range(n):
        text = f"第{k}号文件说张三去了北京" if k % 2 == 0 else f"第{k}号文件什么也没说"
        ents = [] if k % 2 else [
            {"start_idx": text.index("张三"), "end_idx": text.index("张三") + 2, "entity_text": "张三",
             "entity_label": "PER", "entity_names": ["人名"]},
            {"start_idx": text.index("北京"), "end_idx": text.index("北京") + 2, "entity_text": "北京",
             "entity_label": "GPE", "entity_names": ["地理实体"]}]
        rows.append({"text": text, "entities": ents, "data_source": "test"})
    path = tmp_path / "data.jsonl"
    write_jsonl(path, rows)
    return path


def read_split(out: Path, split: str) -> list[dict]:
    return [json.loads(x) for x in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------------- export


def test_the_conversation_is_what_train_feeds_the_model(tiny_tokenizer):
    """The exported turns, put through the chat template, give the token ids ``train`` encodes (up to the
    template's line break after <|im_end|>)."""
    from nerft.train.config import TrainConfig
    from nerft.train.data import encode_document
    from nerft.train.loop import build_training_prompt

    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    for output_format, style, system_prompt in (("compact", "nerft", None), ("tutorial", "tutorial", None),
                                                ("jsonl", "nerft", "你自己的系统提示")):
        cfg = SftExportConfig("messages", output_format, style, False, system_prompt)
        train_cfg = TrainConfig()
        train_cfg.data.output_format, train_cfg.data.prompt_style = output_format, style
        train_cfg.data.system_prompt = system_prompt
        prompt = export_prompt(LABELS, cfg)
        assert prompt == build_training_prompt(train_cfg, LABELS)
        for doc in DOCS:
            system, user, answer = conversation(doc, LABELS, prompt)
            trained = encode_document(doc, tiny_tokenizer, prompt, get_format(output_format), LABELS, im_end)
            templated = tiny_tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user},
                 {"role": "assistant", "content": answer}], tokenize=True)
            # transformers 5 returns a BatchEncoding (a mapping), 4.x a list of ids
            templated = list(templated["input_ids"]) if hasattr(templated, "keys") else list(templated)
            assert templated[:len(trained.input_ids)] == trained.input_ids
    assert conversation(DOCS[0], LABELS, build_prompt(LABELS, "tutorial", "tutorial"))[1] == "文本:张三去北京"


@pytest.mark.parametrize("export_format", ["llamafactory-alpaca", "llamafactory-sharegpt", "messages"])
def test_prepare_exports_every_split_in_the_split_files_order(tmp_path, export_format):
    out = tmp_path / "ccfbdci-mini"
    report = prepare(PrepareConfig(input=str(sft_file(tmp_path)), out=str(out), plot=False,
                                   export=SftExportConfig(export_format)))
    prompt = build_prompt(report.labels, "compact")
    folder = out / export_format
    every_answer = set()
    for split in ("train", "dev", "test"):
        docs = read_split(out, split)
        answers = [get_format("compact").render(
            [Entity(e["start"], e["end"], e["label"], e["text"]) for e in d["entities"]], report.labels) for d in docs]
        every_answer.update(answers)
        if export_format == "messages":
            records = [json.loads(x) for x in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
            assert records == [{"messages": [{"role": "system", "content": prompt.system},
                                             {"role": "user", "content": d["text"]},
                                             {"role": "assistant", "content": a}]} for d, a in zip(docs, answers, strict=True)]
        else:
            records = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
            if export_format == "llamafactory-alpaca":
                assert records == [{"instruction": d["text"], "input": "", "output": a, "system": prompt.system}
                                   for d, a in zip(docs, answers, strict=True)]
            else:
                assert records == [{"conversations": [{"from": "human", "value": d["text"]},
                                                      {"from": "gpt", "value": a}], "system": prompt.system}
                                   for d, a in zip(docs, answers, strict=True)]
    assert every_answer == {"人名:张三\n地理实体:北京", ""}  # display names, in text order; nothing for none
    if export_format == "messages":
        assert not (folder / "dataset_info.json").exists()
        return
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    assert sorted(info) == ["ccfbdci-mini_dev", "ccfbdci-mini_test", "ccfbdci-mini_train"]
    if export_format == "llamafactory-alpaca":
        assert info["ccfbdci-mini_train"] == {"file_name": "train.json", "columns": {
            "prompt": "instruction", "query": "input", "response": "output", "system": "system"}}
    else:
        assert info["ccfbdci-mini_test"] == {"file_name": "test.json", "formatting": "sharegpt",
                                             "columns": {"messages": "conversations", "system": "system"},
                                             "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                                      "assistant_tag": "gpt"}}


def test_cli_export_flags_and_tutorial_prompt(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["prepare", "--input", str(sft_file(tmp_path)), "--out", str(out), "--no-plot",
                     "--export-format", "llamafactory-alpaca", "--export.output-format", "tutorial",
                     "--export.prompt-style", "tutorial"]) == 0
    assert "llamafactory-alpaca/train.json" in capsys.readouterr().out
    first = json.loads((out / "llamafactory-alpaca" / "train.json").read_text(encoding="utf-8"))[0]
    assert first["system"].startswith("你是一个文本实体识别领域的专家") and first["instruction"].startswith("文本:")
    assert cli.main(["prepare", "--input", str(sft_file(tmp_path)), "--out", str(out), "--export-format",
                     "messages", "--export.prompt-style", "tutorial"]) == 2
    assert "goes with export.output_format tutorial" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- predictions


def chatml(system: str, user: str) -> str:
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def llamafactory_rows(docs, answers, labels=LABELS):
    """What LLaMA-Factory's save_predictions writes: the decoded prompt, the prediction, the decoded label."""
    prompt = build_prompt(labels, "compact")
    return [{"prompt": chatml(prompt.system, d.text), "predict": a,
             "label": get_format("compact").render(d.entities, labels)} for d, a in zip(docs, answers, strict=True)]


def swift_rows(docs, answers, labels=LABELS):
    """What ``swift infer --result_path`` writes: response, labels, and the messages with the answer appended."""
    prompt = build_prompt(labels, "compact")
    return [{"response": a, "labels": get_format("compact").render(d.entities, labels), "logprobs": None,
             "messages": [{"role": "system", "content": prompt.system}, {"role": "user", "content": d.text},
                          {"role": "assistant", "content": a}]} for d, a in zip(docs, answers, strict=True)]


@pytest.fixture
def gold_file(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    write_jsonl(path, DOCS)
    return path


# c: 南国 is placed at its first occurrence (gold has the second) and 南国的雨 is no person: two false positives
ANSWERS = ["人名:张三\n地理实体:北京", "", "地点:南国\n人名:南国的雨"]


@pytest.mark.parametrize("make, fmt", [(llamafactory_rows, "llamafactory"), (swift_rows, "swift")])
def test_trainer_predictions_are_scored_like_raw_answers(tmp_path, gold_file, make, fmt):
    pred = tmp_path / "generated_predictions.jsonl"
    write_jsonl(pred, make(DOCS, ANSWERS))
    assert detect_prediction_format(pred) == fmt
    metrics = evaluate(EvaluateConfig(gold=str(gold_file), pred=str(pred), labels="ccfbdci", quiet=True))
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [{"id": d.id, "output": a} for d, a in zip(DOCS, ANSWERS, strict=True)])
    same = evaluate(EvaluateConfig(gold=str(gold_file), pred=str(raw), labels="ccfbdci", quiet=True))
    assert metrics["strict"] == same["strict"]
    assert (metrics["strict"]["micro"]["tp"], metrics["strict"]["micro"]["fp"]) == (2, 2)
    forced = evaluate(EvaluateConfig(gold=str(gold_file), pred=str(pred), labels="ccfbdci", quiet=True,
                                     pred_format=fmt))
    assert forced["strict"] == metrics["strict"]


def test_rows_of_another_document_or_order_are_refused(tmp_path, gold_file):
    pred = tmp_path / "generated_predictions.jsonl"
    write_jsonl(pred, llamafactory_rows([DOCS[1], DOCS[0], DOCS[2]], ANSWERS))
    with pytest.raises(InputError) as err:
        evaluate(EvaluateConfig(gold=str(gold_file), pred=str(pred), labels="ccfbdci", quiet=True))
    assert err.value.line == 1 and "does not belong to gold document 'a'" in err.value.problem
    write_jsonl(pred, llamafactory_rows(DOCS + DOCS[:1], ANSWERS + [""]))
    with pytest.raises(InputError, match="more predictions"):
        evaluate(EvaluateConfig(gold=str(gold_file), pred=str(pred), labels="ccfbdci", quiet=True))


def test_fewer_rows_are_missing_predictions(tmp_path, gold_file, capsys):
    pred = tmp_path / "result.jsonl"
    write_jsonl(pred, swift_rows(DOCS[:2], ANSWERS[:2]))
    assert cli.main(["evaluate", "--gold", str(gold_file), "--pred", str(pred), "--labels", "ccfbdci"]) == 2
    assert "no prediction for 1 of 3 gold documents" in capsys.readouterr().err
    metrics = evaluate(EvaluateConfig(gold=str(gold_file), pred=str(pred), labels="ccfbdci", quiet=True,
                                      allow_missing=True))
    assert metrics["missing_predictions"] == 1 and metrics["strict"]["micro"]["fn"] == 1


def test_prompt_cut_by_the_cutoff_and_files_without_prompts(tmp_path):
    long_doc = Document("long", "很长的文本" * 20 + "张三", [Entity(100, 102, "PER", "张三")])
    rows = llamafactory_rows([long_doc], ["人名:张三"])
    rows[0]["prompt"] = rows[0]["prompt"][: rows[0]["prompt"].index("很长的文本") + 40]  # cutoff_len cut it
    path = tmp_path / "cut.jsonl"
    write_jsonl(path, rows)
    assert [row for _, row in read_trainer_predictions(path, "llamafactory", [long_doc])] == [
        {"id": "long", "output": "人名:张三"}]
    old = tmp_path / "old.jsonl"  # older LLaMA-Factory wrote only label and predict
    write_jsonl(old, [{"label": r["label"], "predict": r["predict"]} for r in llamafactory_rows(DOCS, ANSWERS)])
    assert detect_prediction_format(old) == "llamafactory"
    assert len(list(read_trainer_predictions(old, "llamafactory", DOCS))) == 3
    with pytest.raises(InputError, match="its label .* does not match the gold entities"):
        list(read_trainer_predictions(old, "llamafactory", [DOCS[1], DOCS[0], DOCS[2]]))


def test_swift_2_query_rows_and_bad_rows(tmp_path):
    path = tmp_path / "swift2.jsonl"
    write_jsonl(path, [{"system": "s", "query": d.text, "response": a, "label": "", "history": []}
                       for d, a in zip(DOCS, ANSWERS, strict=True)])
    assert detect_prediction_format(path) == "swift"
    assert [row["id"] for _, row in read_trainer_predictions(path, "swift", DOCS)] == ["a", "b", "c"]
    write_jsonl(path, [{"response": None, "labels": "", "messages": []}])
    with pytest.raises(InputError, match="missing or non-string 'response'"):
        list(read_trainer_predictions(path, "swift", DOCS))


def test_nerft_predictions_still_detected(tmp_path, gold_file):
    pred = tmp_path / "pred.jsonl"
    write_jsonl(pred, [{"id": d.id, "text": d.text, "entities": [e.to_dict() for e in d.entities]} for d in DOCS])
    assert detect_prediction_format(pred) == "nerft"
    assert evaluate(EvaluateConfig(gold=str(gold_file), pred=str(pred), quiet=True))["strict"]["micro"]["f1"] == 1.0
