"""doccano both ways: its sequence-labelling JSONL read by ``prepare`` in both export layouts (samples written by
hand after doccano's own export examples), and ``predict --output-format doccano`` read back."""

from __future__ import annotations

import json

import pytest

from nerft import cli
from nerft.labels import ccfbdci_labels
from nerft.predict.writers import doccano_row, write_tool_file
from nerft.prepare import PrepareConfig, prepare
from nerft.readers import detect_format, read_dataset, read_doccano
from nerft.schema import InputError


def lines(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def spans(doc):
    return [(e.start, e.end, e.label, e.text) for e in doc.entities]


# A sequence-labelling project's export: one object a line, "label" triples, doccano's empty "Comments".
TRIPLES = lines(
    {"id": 101, "text": "张三在北京工作。", "label": [[3, 5, "GPE"], [0, 2, "PER"]], "Comments": []},
    {"id": 102, "text": "嗯。", "label": [], "Comments": []},
    {"id": 103, "text": "李四和华为签约", "label": [[0, 2, "PER"], [3, 5, "ORG"]], "Comments": []},
)
# The same project exported with relations enabled: "entities" objects with start/end offsets, and "relations".
OBJECTS = lines(
    {"id": 101, "text": "张三在北京工作。",
     "entities": [{"id": 7, "label": "PER", "start_offset": 0, "end_offset": 2},
                  {"id": 8, "label": "GPE", "start_offset": 3, "end_offset": 5}],
     "relations": [{"id": 1, "from_id": 7, "to_id": 8, "type": "works_in"}], "Comments": []},
    {"id": 102, "text": "嗯。", "entities": [], "relations": [], "Comments": []},
    {"id": 103, "text": "李四和华为签约",
     "entities": [{"id": 9, "label": "PER", "start_offset": 0, "end_offset": 2},
                  {"id": 10, "label": "ORG", "start_offset": 3, "end_offset": 5}], "relations": [], "Comments": []},
)
EXPECTED = [("101", [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]), ("102", []),
            ("103", [(0, 2, "PER", "李四"), (3, 5, "ORG", "华为")])]


@pytest.mark.parametrize("content", [TRIPLES, OBJECTS], ids=["label-triples", "entities-objects"])
def test_both_export_layouts_read_the_same(tmp_path, content):
    path = tmp_path / "admin.jsonl"
    path.write_text(content, encoding="utf-8")
    assert detect_format(path) == "doccano"
    docs, report = read_dataset(path)
    assert [(d.id, spans(d)) for d in docs] == EXPECTED
    assert (report.format, report.docs, report.entities) == ("doccano", 3, 4)


def test_prepare_reads_doccano_instead_of_failing_on_the_label_set(tmp_path):
    """Before doccano had a reader, its file was taken for nerft JSONL and prepare failed with 'cannot infer a
    label set' (no record had entities)."""
    records = [{"id": k, "text": f"第{k}次张三去北京", "label": [[len(f"第{k}次"), len(f"第{k}次") + 2, "PERSON"]]}
               for k in range(20)]
    path = tmp_path / "export.jsonl"
    path.write_text(lines(*records), encoding="utf-8")
    report = prepare(PrepareConfig(input=str(path), out=str(tmp_path / "out"), plot=False))
    assert report.read.format == "doccano" and report.stats["all"]["entities"] == 20
    assert report.labels.codes == ["PERSON"]


def test_empty_label_lists_and_old_key_names(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(lines({"data": "王五来了", "labels": [[0, 2, "PER"]]}, {"text": "无", "label": []}),
                    encoding="utf-8")
    docs, _ = read_doccano(path)
    assert [(d.id, spans(d)) for d in docs] == [("old-1", [(0, 2, "PER", "王五")]), ("old-2", [])]
    only_empty = tmp_path / "empty.jsonl"
    only_empty.write_text(lines({"text": "甲", "label": []}), encoding="utf-8")
    assert detect_format(only_empty) == "doccano"  # no other format has a list under "label"


@pytest.mark.parametrize("record, problem", [
    ({"text": "张三", "label": [[0, 2]]}, "is not a [start, end, label] triple"),
    ({"text": "张三", "label": [[0, "2", "PER"]]}, "end offset must be an integer"),
    ({"text": "张三", "label": [[0, 9, "PER"]]}, "outside the text"),
    ({"text": "张三", "label": [[0, 2, ""]]}, "needs a label string"),
    ({"text": "张三", "entities": [{"label": "PER", "start_offset": 0}]}, "start_offset, end_offset and label"),
    ({"label": [[0, 2, "PER"]]}, "'text'"),
])
def test_bad_records_name_file_and_line(tmp_path, record, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(lines({"text": "好", "label": []}, record), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_doccano(path)
    assert err.value.line == 2 and problem in err.value.problem
    docs, report = read_doccano(path, skip_invalid=True)
    assert len(docs) == 1 and report.skipped == 1


def test_written_rows_read_back_to_the_same_spans(tmp_path):
    rows = [{"id": "d1", "text": "张三在北京", "entities": [
                {"start": 0, "end": 2, "label": "PER", "text": "张三", "score": 0.9},
                {"start": 3, "end": 5, "label": "GPE", "text": "北京", "score": 0.8}]},
            {"id": "d2", "text": "嗯。", "entities": [{"start": None, "end": None, "label": "PER", "text": "李四"}]}]
    assert doccano_row(rows[0]) == {"id": "d1", "text": "张三在北京", "label": [[0, 2, "PER"], [3, 5, "GPE"]]}
    work, out = tmp_path / "pred.nerft.jsonl", tmp_path / "pred.jsonl"
    work.write_text(lines(*rows), encoding="utf-8")
    assert write_tool_file(work, out, "doccano", ccfbdci_labels(), "m") == [out]
    docs, _ = read_dataset(out)
    assert [(d.id, spans(d)) for d in docs] == [("d1", [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]), ("d2", [])]


def test_cli_predict_writes_doccano(tmp_path, tiny_tokenizer):
    from helpers_models import shared_run_dir

    inp = tmp_path / "in.txt"
    inp.write_text("北京是中国的首都。\n张三在上海工作，他喜欢华为公司。\n", encoding="utf-8")
    out = tmp_path / "for-doccano.jsonl"
    assert cli.main(["predict", "--model", str(shared_run_dir(tiny_tokenizer)), "--input", str(inp), "--output",
                     str(out), "--output-format", "doccano", "--constrained", "--max-new-tokens", "8",
                     "--no-progress"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "for-doccano.nerft.jsonl").read_text(encoding="utf-8").splitlines()]
    written = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert written == [{"id": r["id"], "text": r["text"], "label": [[e["start"], e["end"], e["label"]]
                                                                    for e in r["entities"]]} for r in rows]
    assert detect_format(out) == "doccano"


def test_declared_encoding(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(TRIPLES.encode("gb18030"))
    docs, _ = read_doccano(path, encoding="gb18030")
    assert [(d.id, spans(d)) for d in docs] == EXPECTED
    with pytest.raises(InputError, match="not valid utf-8"):
        read_doccano(path)
