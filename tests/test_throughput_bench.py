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
    argv = ["--model", str(run), "--test", str(data / "test.jsonl"), "--engines", "transformers-fp32,ct2-float32",
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
