"""benchmarks/throughput.py end to end on the tiny answering run: 2 engines x 1 batch size, in process. Checks the
harness (rows, resumability, the result files and their command line), never the numbers' size."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from bench_fixtures import write_mini_data
from conftest import REPO
from helpers_engines import build_answering_run

sys.path.insert(0, str(REPO))

from benchmarks import common, throughput  # noqa: E402

DOCS = [("d1", "张三在北京工作。", [(0, 2, "PER"), (3, 5, "LOC")]), ("d2", "今天天气很好。", []),
        ("d3", "我和张三明天去北京。", [(2, 4, "PER"), (7, 9, "LOC")])]


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None,
                    reason="CTranslate2 is not installed (pip install 'nerft[ct2]')")
def test_throughput_two_engines_one_batch(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    monkeypatch.setattr(common, "IN_PROCESS", True)
    run = build_answering_run(tmp_path / "model", tiny_tokenizer)
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    argv = ["--model", str(run), "--test", str(data / "test.jsonl"), "--engines", "transformers-fp32,ct2-float32@2",
            "--batch-sizes", "2", "--threads", "1", "--limits-seconds", "0.1", "--work", str(tmp_path / "work"),
            "--results", str(tmp_path / "results")]
    assert throughput.main(argv) == 0
    result = json.loads((tmp_path / "results" / "throughput.json").read_text())
    rows = {r["engine"]: r for r in result["table"]}
    assert set(rows) == {"transformers-fp32", "ct2-float32"}
    for r in rows.values():
        assert r["docs"] == 3 and r["batch"] == 2
        assert r["peak_rss_gb"] >= 0.1  # a child process that loaded torch and a model: at least 100 MB
        assert 0 < r["roofline_share"] and r["gflop_decode"] > 0 and r["f1"] == rows["transformers-fp32"]["f1"]
    assert rows["ct2-float32"]["same_entities"] == 1.0  # the float32 engine answers as transformers does
    assert rows["transformers-fp32"]["f1"] == 100.0  # the run answers 张三 and 北京 wherever they are
    md = (tmp_path / "results" / "throughput.md").read_text()
    assert "Command: `python" in md and "| ct2-float32 | 2 | 3 |" in md
    capsys.readouterr()
    assert throughput.main(argv) == 0  # resumed: every row kept, none measured again
    assert capsys.readouterr().err.count("done before, kept") == 2


def test_matmul_peak_measures_int8():
    from benchmarks import matmul_peak

    r = matmul_peak.matmul_flops(size=64, dtype="int8", threads=1, seconds=0.01)
    assert r["dtype"] == "int8" and r["runs"] >= 3 and r["flops"] > 0
    assert abs(2 * 64**3 / r["flops"] - r["best_s"]) <= 5e-6 and r["kernel"]


def test_profile_predict_accounts_for_the_whole_time(tmp_path, tiny_tokenizer, monkeypatch):
    from benchmarks import profile_predict

    run = build_answering_run(tmp_path / "model", tiny_tokenizer)
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    common_args = ["--model", str(run), "--test", str(data / "test.jsonl"), "--docs", "3", "--threads", "1",
                   "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")]
    assert profile_predict.main([*common_args, "--autocast", "off", "--constrained", "--name", "before"]) == 0
    assert profile_predict.main([*common_args, "--autocast", "bf16", "--no-constrained", "--name", "after"]) == 0
    result = json.loads((tmp_path / "results" / "profile_predict.json").read_text())
    before, after = result["sections"]
    assert (before["name"], after["name"]) == ("before", "after") and before["docs"] == 3
    assert before["constrained"] is True and after["constrained"] is False  
    parts = {r["part"]: r["seconds"] for r in before["rows"]}
    assert {"prefill (blocks)", "decode steps (blocks)", "lm_head", "constrained masks"} <= set(parts)
    assert "constrained masks" not in {r["part"] for r in after["rows"]}
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) == pytest.approx(before["seconds_profiled"], abs=0.05)  # rounding only
    md = (tmp_path / "results" / "profile_predict.md").read_text()
    assert "### before:" in md and "### after:" in md


def test_predict_order_times_both_orders_on_the_same_documents(tmp_path, tiny_tokenizer):
    from benchmarks import predict_order

    run = build_answering_run(tmp_path / "model", tiny_tokenizer)
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    assert predict_order.main(["--model", str(run), "--test", str(data / "test.jsonl"), "--docs", "3", "--threads",
                               "1", "--autocast", "off", "--results", str(tmp_path / "results"),
                               "--work", str(tmp_path / "work")]) == 0
    result = json.loads((tmp_path / "results" / "predict_order.json").read_text())
    assert [r["order"] for r in result["rows"]] == ["input order", "longest first"]
    assert all(r["docs"] == 3 and r["docs_per_s"] > 0 for r in result["rows"])
    assert result["same_entities"] == 1.0  # fp32: the order of the batches changes no answer
    slow, fast = (r["docs_per_s"] for r in result["rows"])
    assert result["speedup"] == pytest.approx(fast / slow, rel=0.05)
    assert "| longest first | 3 |" in (tmp_path / "results" / "predict_order.md").read_text()


def test_serve_throughput_measures_a_real_server(tmp_path, tiny_tokenizer):
    from benchmarks import serve_throughput

    run = build_answering_run(tmp_path / "model", tiny_tokenizer)
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    assert serve_throughput.main(["--server", f"tiny=--model {run} --device cpu --scheduler continuous",
                                  "--test", str(data / "test.jsonl"), "--clients", "4", "--seconds", "1",
                                  "--rate-shares", "0.5", "--threads", "1", "--idle", "3", "--request-texts", "2",
                                  "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")]) == 0
    result = json.loads((tmp_path / "results" / "serve_throughput.json").read_text())
    (row,) = result["rows"]
    # the bulk baseline ran on the same texts, without the serve-only flag, and the ratios are its
    assert row["bulk_docs_s"] > 0 and row["vs_bulk"] == pytest.approx(row["closed"]["rps"] / row["bulk_docs_s"],
                                                                     abs=0.01)
    assert row["idle"]["ok"] == 3 and row["request_s"] > 0 and row["bulk_request_s"] > 0
    assert row["request_vs_bulk"] == pytest.approx(row["request_s"] / row["bulk_request_s"], abs=0.01)
    assert row["server"] == "tiny" and row["closed"]["ok"] == row["closed"]["requests"] > 0
    assert row["closed"]["rps"] > 0 and row["closed"]["p50_s"] <= row["closed"]["p95_s"]
    assert len(row["open"]) == 1 and row["peak_rss_gb"] >= 0.1
    assert row["rps_at_p95_1s"] in (0.0, row["open"][0]["rps"])
    assert "| tiny | 4 |" in (tmp_path / "results" / "serve_throughput.md").read_text()


def test_serve_throughput_refuses_a_server_without_a_name():
    from benchmarks import serve_throughput

    with pytest.raises(SystemExit, match="NAME=FLAGS"):
        serve_throughput.main(["--server", "--model x"])


def test_throughput_measures_a_tagger_beside_the_generative_engine(tmp_path, tiny_tokenizer, monkeypatch):
    """--tagger RUN: the tagger-* engines run on the tagging run in the same benchmark, with their own model sizes
    (no lm_head, no decode) in the roofline."""
    from helpers_tagger import build_tagger_run

    monkeypatch.setattr(common, "IN_PROCESS", True)
    run = build_answering_run(tmp_path / "model", tiny_tokenizer)
    tagger, _ = build_tagger_run(tmp_path / "tagger", tiny_tokenizer)
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    argv = ["--model", str(run), "--tagger", str(tagger), "--test", str(data / "test.jsonl"), "--engines",
            "transformers-fp32,tagger-fp32", "--batch-sizes", "2", "--threads", "1", "--limits-seconds", "0.1",
            "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    assert throughput.main(argv) == 0
    rows = {r["engine"]: r for r in json.loads((tmp_path / "results" / "throughput.json").read_text())["table"]}
    assert set(rows) == {"transformers-fp32", "tagger-fp32"} and rows["tagger-fp32"]["docs"] == 3
    assert rows["tagger-fp32"]["gflop_decode"] == 0 == rows["tagger-fp32"]["gflop_lm_head"]
    assert rows["tagger-fp32"]["gflop_prefill"] > 0 and rows["tagger-fp32"]["roofline_share"] > 0
    assert rows["transformers-fp32"]["gflop_decode"] > 0
    with pytest.raises(SystemExit, match="tagger-fp32 needs --tagger RUN"):
        throughput.main([*argv[:2], *argv[4:], "--fresh"])


def test_profile_serve_splits_a_loaded_server_s_samples(tmp_path, tiny_tokenizer):
    from benchmarks import profile_serve

    raw = tmp_path / "raw.txt"
    raw.write_text("MainThread;forward (transformers/models/qwen2/modeling_qwen2.py:10) 6\n"
                   "MainThread;_leave (nerft/generation.py:400) 2\n"
                   "MainThread;run (asyncio/base_events.py:1) 1\n"
                   "MainThread;elsewhere (x.py:1) 1\n")
    shares = profile_serve.bucket_shares(raw)
    assert shares["model forward"] == 0.6 and shares["decoding bookkeeping"] == 0.2
    assert shares["event loop"] == 0.1 and shares["other"] == 0.1 and sum(shares.values()) == pytest.approx(1)

    run = build_answering_run(tmp_path / "model", tiny_tokenizer)
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    assert profile_serve.main(["--server", f"tiny=--model {run} --device cpu", "--test", str(data / "test.jsonl"),
                               "--clients", "2", "--seconds", "8", "--threads", "1",
                               "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")]) == 0
    (row,) = json.loads((tmp_path / "results" / "profile_serve.json").read_text())["rows"]
    assert row["rps"] > 0 and row["server_cpu_s"] > 0 and 0 < row["server_cpu_share"] <= 1.05
