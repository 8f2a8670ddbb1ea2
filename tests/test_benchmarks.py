"""Smoke tests for benchmarks/: each benchmark runs end to end on a tiny model so its code cannot rot.

Benchmarks are not tests; these only check that the harness works (files written, keys present), never numbers.
Runs in-process (NERFT_BENCH_IN_PROCESS) on a tiny random Qwen2 with the tiny BPE tokenizer and a hand-written
six-document dataset; the tiny model is biased to end its answer at once, so generation is short.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from bench_fixtures import mini_doc, save_instant_model, write_mini_data
from conftest import REPO

sys.path.insert(0, str(REPO))

from benchmarks import (  # noqa: E402
    bench_accuracy,
    bench_gpu,
    bench_predict,
    bench_train,
    collect_results,
    common,
    matmul_peak,
    scoring,
)
from benchmarks import tutorial_baseline as tb  # noqa: E402

DOCS = [
    ("d1", "张三在北京工作。", [(0, 2, "PER"), (3, 5, "GPE")]),
    ("d2", "嗯。", []),
    ("d3", "联合国总部在纽约。", [(0, 3, "ORG"), (6, 8, "GPE")]),
    ("d4", "李四去了黄山。", [(0, 2, "PER"), (4, 6, "LOC")]),
    ("d5", "今天天气很好。", []),
    ("d6", "王五是华为员工。", [(0, 2, "PER"), (3, 5, "ORG")]),
]




@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Qwen2 folder with the tiny BPE tokenizer; its generation config ends every answer at once."""
    return save_instant_model(tmp_path_factory.mktemp("tiny-qwen2"), tiny_tokenizer)


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory):
    return write_mini_data(tmp_path_factory.mktemp("mini-ccfbdci"), DOCS)


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(common, "IN_PROCESS", True)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP oversubscription (50x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------
# The tutorial baseline's data path, exactly


def test_tutorial_conversion_matches_the_tutorial():
    rec = tb.transfer_record(tb.raw_record(mini_doc(*DOCS[0])))
    assert rec["instruction"] == tb.SYSTEM_PROMPT
    assert rec["input"] == "文本:张三在北京工作。"
    assert rec["output"] == ('{"entity_text": "张三", "entity_label": "人名"}'
                             '{"entity_text": "北京", "entity_label": "地理实体"}')
    assert tb.transfer_record(tb.raw_record(mini_doc(*DOCS[1])))["output"] == "没有找到任何实体"


def test_tutorial_system_prompt_is_nerfts_copy():
    from nerft.prompts import TUTORIAL_SYSTEM_PROMPT

    assert tb.SYSTEM_PROMPT == TUTORIAL_SYSTEM_PROMPT


def test_tutorial_process_func_masks_prompt_ends_with_pad_and_truncates(tiny_tokenizer):
    record = tb.transfer_record(tb.raw_record(mini_doc(*DOCS[0])))
    ex = tb.process_func(record, tiny_tokenizer)
    n_prompt = ex["labels"].count(-100)
    assert tiny_tokenizer.decode(ex["input_ids"][n_prompt:-1]) == record["output"]
    assert ex["input_ids"][-1] == ex["labels"][-1] == tiny_tokenizer.pad_token_id
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert tiny_tokenizer.decode(ex["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n")
    long = tb.process_func({"instruction": "x", "input": "文本:" + "".join(map(chr, range(0x4E00, 0x4E00 + 500))), "output": "没有找到任何实体"},
                           tiny_tokenizer)
    assert len(long["input_ids"]) == len(long["labels"]) == tb.MAX_LENGTH


def test_flop_accounting_matches_qwen25_05b():
    cfg = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936}
    p = bench_train.linear_params(cfg)
    assert p["body"] == 24 * (2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864)
    assert p["body"] + p["lm_head"] + 151936 * 896 == pytest.approx(630.2e6, rel=1e-3)  # untied 0.5B: 630M
    assert bench_train.executed_flops(p, 10, 10, False) == 10 * 4 * (p["body"] + p["lm_head"])


def test_matmul_peak_runs():
    r = matmul_peak.matmul_flops(size=64, dtype="float32", threads=1, seconds=0.01)
    assert r["runs"] >= 3 and abs(2 * 64**3 / r["flops"] - r["best_s"]) <= 5e-6  # best_s: 5 decimals
    assert r["gflops"] == round(r["flops"] / 1e9, 1)


# ---------------------------------------------------------------------------------------------------------------
# Each benchmark end to end


def test_b1_train(tiny_model_dir, mini_data, in_process, tmp_path):
    bench_train.main(["--model", str(tiny_model_dir), "--train", str(mini_data / "train.jsonl"), "--examples", "4",
                      "--max-steps", "1", "--repeats", "1", "--peak-gflops", "10", "--threads", "1", "--results", str(tmp_path),
                      "--work", str(tmp_path / "work")])
    d = json.loads((tmp_path / "b1_train.json").read_text())
    assert [r["recipe"] for r in d["rows"]] == ["tutorial", "nerft"]
    for row in d["rows"]:
        assert row["examples"] == 4 and row["steps"] == 1 and row["padded_tokens"] >= row["real_tokens"] > 0
    tutorial, nerft = d["rows"]
    assert d["ratio_nerft_over_tutorial"]["examples_per_s"] == round(nerft["examples_per_s"] / tutorial["examples_per_s"], 2)
    assert (tmp_path / "b1_train.md").read_text().count("| tutorial |") == 1
    assert (tmp_path / "b1_train.png").is_file()


def test_b2_predict(tiny_model_dir, mini_data, in_process, tmp_path):
    bench_predict.main(["--model", str(tiny_model_dir), "--test", str(mini_data / "test.jsonl"), "--texts", "2", "--threads", "1",
                        "--results", str(tmp_path), "--work", str(tmp_path / "work")])
    d = json.loads((tmp_path / "b2_predict.json").read_text())
    rows = {r["row"]: r for r in d["rows"]}
    assert set(rows) == {"tutorial", "nerft", "nerft+constrained"}
    assert rows["nerft"]["texts"] == 2 and 0 <= rows["nerft"]["agree_entities"] <= 1
    assert "f1" in rows["tutorial"]


def test_b3_accuracy(tiny_model_dir, mini_data, in_process, tmp_path):
    rows = "zero-shot,tutorial,nerft,nerft+constrained,nerft-data" + (",jieba" if _has("jieba") else "")
    bench_accuracy.main(["--model", str(tiny_model_dir), "--data-dir", str(mini_data), "--budget-min", "0.0001",
                         "--test-docs", "2", "--rows", rows, "--threads", "1", "--results", str(tmp_path),
                         "--work", str(tmp_path / "work")])
    d = json.loads((tmp_path / "b3_accuracy.json").read_text())
    names = [r["row"] for r in d["rows"]]
    assert {"zero-shot (nerft prompt)", "tutorial (equal time)", "nerft (equal time)",
            "nerft (equal time) +constrained", f"nerft (equal data, K={d['equal_data_k']})"} <= set(names)
    tutorial = next(r for r in d["rows"] if r["row"].startswith("tutorial"))
    nerft = next(r for r in d["rows"] if r["row"] == "nerft (equal time)")
    assert nerft["steps"] == 1  # nerft's own time budget (6 ms) ended it after its first step
    run_cfg = yaml.safe_load((tmp_path / "work" / "b3" / "nerft" / "config.yaml").read_text())
    assert run_cfg["optim"]["max_minutes"] == 0.0001  # the budget asked for, not a safety margin over it
    assert d["equal_data_k"] == tutorial["examples_seen"] == 6  # its first step: 4 + 2 of the 6 documents
    for r in d["rows"]:  # each row's F1 follows from its own precision and recall
        p_, r_ = r["precision"], r["recall"]
        assert r["test_docs"] == 2 and r["f1"] == pytest.approx(2 * p_ * r_ / (p_ + r_) if p_ + r_ else 0.0, abs=0.02)
    # a later invocation adds a row scored from the existing nerft run (no training) and keeps the earlier rows
    run = tmp_path / "work" / "b3" / "nerft"
    bench_accuracy.main(["--model", str(tiny_model_dir), "--data-dir", str(mini_data), "--test-docs", "2",
                         "--rows", "", "--score-run", f"bias={run}:constrained=true,none_bias=2", "--score-split", "dev",
                         "--variant", "lr:optim.lr=0.001", "--budget-min", "0.0001",
                         "--append", "--threads", "1", "--results", str(tmp_path), "--work", str(tmp_path / "work")])
    again = json.loads((tmp_path / "b3_accuracy.json").read_text())
    assert [r["row"] for r in again["rows"]] == names + ["nerft lr (equal time) [dev]", "bias [dev]"]
    variant = again["rows"][-2]
    assert variant["steps"] == 1 and variant["test_docs"] == 2  # trained, then scored on the first 2 dev documents
    assert len((tmp_path / "work" / "b3" / "gold-dev.jsonl").read_text().splitlines()) == 2
    assert yaml.safe_load((tmp_path / "work" / "b3" / "nerft-lr" / "config.yaml").read_text())["optim"]["lr"] == 0.001
    assert len(again["earlier_commands"]) == 1 and again["equal_data_k"] == d["equal_data_k"]
    bias = again["rows"][-1]
    assert bias["parse_failures"] == 0 and bias["hallucinations"] == 0  # constrained decoding really ran
    # a run trained with lexicon hints is scored with its run's lexicon; a table of dev scorings says so
    bench_accuracy.main(["--model", str(tiny_model_dir), "--data-dir", str(mini_data), "--test-docs", "2",
                         "--rows", "", "--variant", "hints:data.lexicon_hints=2", "--score-split", "dev",
                         "--budget-min", "0.0001", "--out-name", "hints", "--threads", "1", "--results",
                         str(tmp_path), "--work", str(tmp_path / "work")])
    hints = json.loads((tmp_path / "hints.json").read_text())["rows"]
    assert [r["row"] for r in hints] == ["nerft hints (equal time) [dev]"] and hints[0]["steps"] == 1
    assert "0.0001 min training budget" in (tmp_path / "hints.md").read_text()
    bench_accuracy.main(["--model", str(tiny_model_dir), "--data-dir", str(mini_data), "--test-docs", "2",
                         "--rows", "", "--score-run", f"again={tmp_path / 'work' / 'b3' / 'nerft-hints'}",
                         "--score-split", "dev", "--out-name", "scored", "--threads", "1", "--results",
                         str(tmp_path), "--work", str(tmp_path / "work")])
    header = (tmp_path / "scored.md").read_text().split("## B3 accuracy", 1)[1].split("\n", 1)[0]
    assert "first 2 documents of the seeded dev split" in header and "training budget" not in header
    # --tune: thresholds chosen on dev with the run's lexicon, then test scored with them (the instant model
    # answers nothing; every gold string of the mini data is annotated wherever it occurs in train)
    bench_accuracy.main(["--model", str(tiny_model_dir), "--data-dir", str(mini_data), "--test-docs", "2",
                         "--rows", "", "--score-run", f"plain={run}", "--tune", "--out-name", "tuned",
                         "--threads", "1", "--results", str(tmp_path), "--work", str(tmp_path / "work")])
    plain, tuned = json.loads((tmp_path / "tuned.json").read_text())["rows"]
    assert (plain["row"], tuned["row"]) == ("plain", "plain +tuned")
    assert plain["f1"] == 0 and tuned["f1"] == 100 and tuned["dev_f1"] == 100
    assert "lexicon min-rate" in tuned["tuned"] and tuned["tune_min"] >= 0
    chosen = yaml.safe_load((tmp_path / "work" / "b3" / "tune-plain" / "decoding.yaml").read_text())
    assert (tmp_path / "work" / "b3" / "tune-plain" / chosen["lexicon"]).resolve() == (run / "lexicon.json").resolve()
    assert "| tuned |" in (tmp_path / "tuned.md").read_text()


def test_b3_variant_parsing():
    assert scoring.parse_variant("lr:optim.lr=0.0005,data.packing=true") == (
        "lr", {"optim.lr": 5e-4, "data.packing": True})


def test_b4_gpu_script_runs_scaled_down_on_cpu(tmp_path):
    bench_gpu.main(["--tiny", "--steps", "1", "--gen-texts", "2", "--results", str(tmp_path)])
    d = json.loads((tmp_path / "b4_gpu.json").read_text())
    assert {r["recipe"] for r in d["train"]} == {"tutorial", "nerft"}
    gen = d["generate"][0]
    low, high = gen["texts"] / (gen["seconds"] + 0.005), gen["texts"] / max(gen["seconds"] - 0.005, 1e-9)
    assert gen["texts"] == 2 and low - 0.005 <= gen["texts_per_s"] <= high + 0.005  # both rounded to 2 decimals


def test_collect_results_opens_with_the_current_figures_then_orders_tables(tmp_path):
    for name in ("learning_curve", "b2_predict", "b3_accuracy", "b1_train", "extra"):
        (tmp_path / f"{name}.md").write_text(f"## {name}\n")
    text = collect_results.collect(tmp_path, "## Current figures\n")
    order = [text.index(f"## {name}") for name in ("Current figures", "b1_train", "b2_predict", "b3_accuracy",
                                                    "learning_curve", "extra")]
    assert order == sorted(order)


def test_results_md_is_what_collect_results_writes_from_the_committed_files():
    text = collect_results.collect(common.RESULTS, (REPO / "benchmarks" / "CURRENT.md").read_text(encoding="utf-8"))
    assert (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8") == text, \
        "benchmarks/RESULTS.md is out of date: run python -m benchmarks.collect_results"


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
