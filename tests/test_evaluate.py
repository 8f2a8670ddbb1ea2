"""``nerft evaluate`` end to end on small files, its matching rules and errors, and the plots."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest
from conftest import shared_path

from nerft.cli import main
from nerft.evaluate import EvaluateConfig, evaluate
from nerft.formats import get_format
from nerft.jsonl import write_jsonl
from nerft.labels import ccfbdci_labels
from nerft.plots import bar_chart_per_label, line_curves
from nerft.schema import Document, Entity, InputError, NerftError

LABELS = ccfbdci_labels()
GOLD = [
    Document("a", "张三去北京", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")]),
    Document("b", "嗯。", []),
    Document("c", "南国的风，南国的雨", [Entity(5, 7, "LOC", "南国")]),
]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def gold_file(tmp_path) -> Path:
    path = tmp_path / "gold.jsonl"
    write_jsonl(path, GOLD)
    return path


def run(gold, rows, tmp_path, **options):
    pred = tmp_path / "pred.jsonl"
    write_jsonl(pred, rows)
    return evaluate(EvaluateConfig(gold=str(gold), pred=str(pred), quiet=True, **options))


def f1(m):
    return m["strict"]["micro"]["f1"]


def test_gold_as_predictions_scores_perfectly_and_writes_outputs(gold_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["evaluate", "--gold", str(gold_file), "--pred", str(gold_file), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| PER | 1.0000 | 1.0000 | 1.0000 | 1 |" in printed and "**macro**" in printed
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_label.png", "report.html", "report.md"]
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for rule in ("strict", "boundary", "partial"):
        assert m[rule]["micro"]["f1"] == 1.0
    assert m["strict"]["per_label"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1,
                                               "predicted": 1, "tp": 1, "fp": 0, "fn": 0}
    assert m["documents"] == 3 and m["documents_with_errors"] == 0 and m["missing_predictions"] == 0
    assert {"parse_failures", "hallucinations", "duplicates", "confusion", "strict"} <= set(m)
    assert (out / "per_label.png").read_bytes().startswith(PNG)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| **micro** | 1.0000 |" in report and "Label confusion" in report


def test_raw_outputs_are_parsed_and_grounded(gold_file, tmp_path):
    fmt = get_format("tutorial")
    rows = [{"id": d.id, "output": fmt.render(d.entities, LABELS)} for d in GOLD]
    m = run(gold_file, rows, tmp_path, format="tutorial", labels="ccfbdci")
    # document c annotates only the second 南国: the answer cannot say so, grounding takes the first
    assert m["strict"]["micro"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "tp": 2, "fp": 1, "fn": 1}
    assert m["partial"]["micro"]["tp"] == 2 and m["parse_failures"] == 0
    # a garbled answer, a hallucination and a duplicate are counted, and the label set can be inferred
    rows[0]["output"] = '人名:张三\n人名:张三\n人名:李四\n{"entity_text": "北京", "entity_la'
    m = run(gold_file, rows, tmp_path)
    assert (m["parse_failures"], m["hallucinations"], m["duplicates"]) == (1, 1, 1)
    assert m["strict"]["micro"] == {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "tp": 1, "fp": 1, "fn": 2}
    kept = run(gold_file, rows, tmp_path, keep_hallucinated=True)
    assert kept["hallucinations"] == 1 and kept["strict"]["micro"]["fp"] == 2


def test_entities_without_offsets_are_grounded(gold_file, tmp_path):
    rows = [{"id": "a", "entities": [{"text": "张三", "label": "人名"}, {"text": "北京", "label": "GPE"}]},
            {"id": "b", "entities": []},
            {"id": "c", "entities": [{"text": "南国", "label": "LOC"}, {"text": "上海", "label": "GPE"}]}]
    m = run(gold_file, rows, tmp_path, labels="ccfbdci")
    # 南国 without offsets goes to its first occurrence, not the annotated second one
    assert m["strict"]["micro"]["tp"] == 2 and m["strict"]["micro"]["fp"] == 1
    assert m["hallucinations"] == 1 and m["partial"]["micro"]["tp"] == 2


def test_output_or_entities_by_source(gold_file, tmp_path):
    rows = [{"id": d.id, "entities": [e.to_dict() for e in d.entities], "output": ""} for d in GOLD]
    assert f1(run(gold_file, rows, tmp_path)) == 1.0
    assert f1(run(gold_file, rows, tmp_path, source="output")) == 0.0


def test_matching_by_id_ignores_order(gold_file, tmp_path):
    rows = [{"id": d.id, "entities": [e.to_dict() for e in d.entities]} for d in reversed(GOLD)]
    assert f1(run(gold_file, rows, tmp_path)) == 1.0


def test_matching_by_line_order_checks_texts(gold_file, tmp_path):
    rows = [{"text": d.text, "entities": [e.to_dict() for e in d.entities]} for d in GOLD]
    assert f1(run(gold_file, rows, tmp_path)) == 1.0
    rows[0], rows[1] = rows[1], rows[0]
    with pytest.raises(InputError, match=r"pred.jsonl, line 1: its text '嗯。' differs .*id 'a'"):
        run(gold_file, rows, tmp_path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "zz", "entities": []}], r"line 1: id 'zz' is not in the gold file"),
        ([{"id": "a", "entities": []}, {"id": "a", "entities": []}], r"line 2: a second prediction for id 'a'"),
        ([{"id": "a"}], r"line 1: a prediction needs `entities` or `output`"),
        ([{"id": "a", "entities": [{"start": 0, "end": 2, "label": "PER", "text": "北京"}]}],
         r"line 1: entity '北京' does not match text\[0:2\] = '张三'"),
        ([{"id": "a", "entities": [{"start": 3, "end": 99, "label": "PER", "text": "北京"}]}],
         r"line 1: entity '北京' \[3, 99\) is not a span"),
        ([{"entities": []}] * 4, r"line 4: more predictions \(4\) than gold documents \(3\)"),
        ([{"id": "a", "output": 3}], r"line 1: `output` must be a string"),
    ],
)
def test_bad_predictions_name_the_line(gold_file, tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        run(gold_file, rows, tmp_path, allow_missing=True)


def test_missing_predictions_fail_unless_allowed(gold_file, tmp_path):
    rows = [{"id": "a", "entities": [e.to_dict() for e in GOLD[0].entities]}]
    with pytest.raises(NerftError, match=r"no prediction for 2 of 3 gold documents \(matched by id; first missing id 'b'\)"):
        run(gold_file, rows, tmp_path)
    m = run(gold_file, rows, tmp_path, allow_missing=True)
    assert m["missing_predictions"] == 2 and m["strict"]["micro"]["fn"] == 1 and m["documents_with_errors"] == 1


def test_cli_errors_are_reported_without_traceback(gold_file, tmp_path, capsys):
    assert main(["evaluate", "--gold", str(gold_file), "--pred", str(tmp_path / "nope.jsonl")]) == 2
    assert "prediction file" in capsys.readouterr().err
    assert main(["evaluate", "--gold", str(gold_file), "--pred", str(gold_file), "--answer-format", "xml"]) == 2
    assert "unknown output format" in capsys.readouterr().err


def test_yaml_config_and_flag_override(gold_file, tmp_path):
    config = tmp_path / "evaluate.yaml"
    config.write_text(f"gold: {gold_file}\npred: {gold_file}\nquiet: true\nout: {tmp_path / 'x'}\n", encoding="utf-8")
    assert main(["evaluate", "--config", str(config), "--out", str(tmp_path / "y")]) == 0
    assert (tmp_path / "y" / "metrics.json").exists() and not (tmp_path / "x").exists()


def test_line_curves_and_bar_chart(tmp_path):
    line_curves({"train loss": [(1, 2.5), (2, 1.0), (3, 0.7)], "dev F1": [(2, 0.4)], "empty": []},
                tmp_path / "curves.png", "run")
    line_curves({}, tmp_path / "none.png", "")
    bar_chart_per_label({"strict": {"per_label": {}, "micro": {"precision": 0, "recall": 0, "f1": 0}}},
                        tmp_path / "bars.png")
    for name in ("curves.png", "none.png", "bars.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "curves.png", "none.png"]  # no temp files


def _label_boxes(series, ylim=None):
    """Value labels drawn by ``label_points`` over ``series`` on a log-x axes (its y range ``ylim`` where given):
    each label's box, each point's display position, and whether every label has its backing."""
    from nerft.plots import _figure, label_points

    fig = _figure((6.4, 4.0))
    ax = fig.subplots()
    marked = []
    for points in series.values():
        line, = ax.plot(*zip(*points, strict=True), marker="o")
        marked += [(x, y, line.get_color()) for x, y in points]
    ax.set_xscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    label_points(ax, marked, fontsize=7)
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    backed = all(t.get_bbox_patch() is not None for t in ax.texts)
    at = {(x, y): tuple(ax.transData.transform((x, y))) for pts in series.values() for x, y in pts}
    return boxes, at, backed


def test_value_labels_of_close_points_are_stacked_not_overlaid(tmp_path):
    from nerft.plots import line_chart

    # the learning curve's K = 1,600 column: three recipes within 2.4 points of each other
    series = {"crf": [(100, 10.4), (1600, 60.3)], "lexicon": [(100, 27.0), (1600, 60.8)], "nerft": [(1600, 62.7)]}
    line_chart(series, tmp_path / "curve.png", log_x=True)
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG)
    boxes, at, _ = _label_boxes(series)
    assert sorted(boxes) == ["10.4", "27.0", "60.3", "60.8", "62.7"]
    assert [pair for pair in combinations(boxes, 2) if boxes[pair[0]].overlaps(boxes[pair[1]])] == []
    # one under another in the order of the values; a lone point's label above it
    assert boxes["60.3"].y0 < boxes["60.8"].y0 < boxes["62.7"].y0
    # at the last x they sit right of the points, where no line comes in from
    assert min(boxes[v].x0 for v in ("60.3", "60.8", "62.7")) > at[1600, 60.3][0]
    assert boxes["10.4"].y0 > at[100, 10.4][1]


def test_stacked_value_labels_go_to_the_side_fewer_lines_cross():
    # the learning curve's K = 400 column: two lines come in from the left at 38.2 / 38.3, none leaves to the right
    # near them (the third line leaves K = 400 far below)
    series = {"crf": [(100, 10.4), (400, 38.2)], "tutorial": [(100, 35.9), (400, 38.3)],
              "other": [(100, 5.0), (400, 6.0), (1600, 60.0)]}
    boxes, at, backed = _label_boxes(series)
    assert min(boxes["38.2"].x0, boxes["38.3"].x0) > at[400, 38.2][0]  # right, away from the incoming lines
    assert not boxes["38.2"].overlaps(boxes["38.3"]) and backed
    # mirrored: the lines leave to the right, nothing comes in from the left: the labels stay on the left
    series = {"crf": [(400, 38.2), (1600, 10.4)], "tutorial": [(400, 38.3), (1600, 35.9)],
              "other": [(100, 5.0), (400, 6.0), (1600, 60.0)]}
    boxes, at, _ = _label_boxes(series)
    assert max(boxes["38.2"].x1, boxes["38.3"].x1) < at[400, 38.2][0]


def test_two_stacks_of_labels_that_would_meet_become_one():
    # the cross-dataset chart's Weibo "all" column on a 0-100 axis: 60.5 / 60.0 and 53.3 / 52.9 / 52.4 are two
    # stacks, 7 points apart, too close for a stack of two beside a stack of three
    series = {"crf": [(100, 10.5), (1350, 52.4)], "nerft": [(100, 35.7), (1350, 60.5)], "mix": [(1350, 60.0)],
              "distilled": [(1350, 53.3)], "lexicon": [(1350, 52.9)]}
    boxes, at, _ = _label_boxes(series, ylim=(0, 100))
    column = ["52.4", "52.9", "53.3", "60.0", "60.5"]
    assert [pair for pair in combinations(column, 2) if boxes[pair[0]].overlaps(boxes[pair[1]])] == []
    assert [boxes[v].y0 for v in column] == sorted(boxes[v].y0 for v in column)  # one stack, in value order
    assert min(boxes[v].x0 for v in column) > at[1350, 60.5][0]


@pytest.mark.shared
def test_tutorial_answers_for_all_of_ccfbdci(tmp_path):
    """Every CCFBDCI gold answer, rendered in the tutorial format and scored as raw output: the only errors are
    the 70 documents whose gold annotates a later occurrence of a mention (see test_grounding)."""
    source = shared_path("data", "ccfbdci", "ccfbdci.jsonl")
    fmt, gold_rows, pred_rows = get_format("tutorial"), [], []
    with open(source, encoding="utf-8") as f:
        for i, line in enumerate(f):
            d = json.loads(line)
            entities = [Entity(e["start_idx"], e["end_idx"], e["entity_label"], e["entity_text"])
                        for e in d["entities"]]
            gold_rows.append(Document(f"d{i}", d["text"], entities))
            pred_rows.append({"id": f"d{i}", "output": fmt.render(entities, LABELS)})
    write_jsonl(tmp_path / "gold.jsonl", gold_rows)
    m = run(tmp_path / "gold.jsonl", pred_rows, tmp_path, format="tutorial", labels="ccfbdci")
    assert m["documents"] == 15_724 and m["documents_with_errors"] == 70 and m["parse_failures"] == 0
    assert m["strict"]["micro"]["tp"] == 12_581 - 72 and m["strict"]["micro"]["fp"] == 72
    assert m["strict"]["micro"]["f1"] == pytest.approx(0.99428, abs=1e-5)
    assert m["boundary"]["micro"]["f1"] >= m["strict"]["micro"]["f1"]


def test_training_curves_draw_without_pyplot(tmp_path):
    """curves.png from a log with a first spike, epochs, dev F1 and a spent time budget, in a process that never
    imports pyplot (charts touch no process-wide matplotlib state)."""
    import subprocess
    import sys

    log = [{"step": s, "loss": 15.0 if s == 1 else 1.0 / s, "epoch": s // 40, "train_seconds": 3.0 * s}
           for s in range(1, 101)] + [{"step": s, "dev/f1": s / 2} for s in (50, 100)]
    code = ("import json, sys; from nerft.plots import training_curves; "
            "training_curves(json.loads(sys.argv[1]), sys.argv[2], budget_minutes=4); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'")
    subprocess.run([sys.executable, "-c", code, json.dumps(log), str(tmp_path / "curves.png")], check=True)
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)


def test_smoothed():
    from nerft.plots import smoothed

    assert smoothed([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]
    assert smoothed([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # debiased: no pull towards 0 at the start
    values = smoothed([15.0] + [1.0] * 30, 0.9)
    assert values[0] == pytest.approx(15.0) and 1.0 < values[-1] < values[5] < 15.0
