"""Label Studio both ways: its JSON and JSON-MIN exports read by ``prepare`` (samples written by hand in the layout
Label Studio 1.23 exports), nerft's pre-annotations and labelling config written by ``predict``, and (marked slow)
the round trip through a real Label Studio started on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nerft import cli
from nerft.labels import LabelSet, ccfbdci_labels
from nerft.predict.writers import config_file, label_studio_task, labeling_config, write_tool_file
from nerft.prepare import PrepareConfig, prepare
from nerft.readers import detect_format, read_dataset, read_label_studio
from nerft.schema import Document, Entity, InputError


def region(rid, start, end, text, *labels, from_name="label", to_name="text", score=None):
    item = {"id": rid, "from_name": from_name, "to_name": to_name, "type": "labels",
            "value": {"start": start, "end": end, "text": text, "labels": list(labels)}}
    if score is not None:
        item["score"] = score
    return item


def annotation(aid, result, *, cancelled=False, ground_truth=False, created="2024-05-06T10:00:00.000000Z"):
    return {"id": aid, "completed_by": 1, "result": result, "was_cancelled": cancelled, "ground_truth": ground_truth,
            "created_at": created, "updated_at": created, "draft_created_at": None, "lead_time": 12.5,
            "prediction": {}, "result_count": len(result), "unique_id": f"u-{aid}", "import_id": None,
            "last_action": None, "bulk_created": False, "task": 0, "project": 3, "updated_by": 1,
            "parent_prediction": None, "parent_annotation": None, "last_created_by": None}


def task(tid, data, annotations=(), predictions=()):
    return {"id": tid, "annotations": list(annotations), "drafts": [], "predictions": list(predictions),
            "data": data, "meta": {}, "created_at": "2024-05-06T09:00:00.000000Z",
            "updated_at": "2024-05-06T10:00:00.000000Z", "inner_id": tid, "total_annotations": len(annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
            "total_predictions": len(predictions), "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 3, "updated_by": 1, "comment_authors": []}


def export_file(tmp_path, tasks, name="project-3-at-2024-05-06.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(tasks, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def spans(doc):
    return [(e.start, e.end, e.label, e.text) for e in doc.entities]


# ------------------------------------------------------------------------------------------- the JSON export


def test_json_export_annotation_rules(tmp_path):
    tasks = [
        task(1, {"text": "张三在北京工作。"}, [annotation(11, [region("a", 0, 2, "张三", "PER"),
                                                         region("b", 3, 5, "北京", "GPE")])]),
        # a cancelled (skipped) annotation is passed over; the next one is read
        task(2, {"text": "李四去了上海"}, [annotation(21, [], cancelled=True),
                                       annotation(22, [region("c", 0, 2, "李四", "PER")])]),
        # the ground-truth annotation wins over an earlier one
        task(3, {"text": "王五在华为上班"}, [annotation(31, [region("d", 0, 2, "王五", "PER")]),
                                        annotation(32, [region("e", 0, 2, "王五", "PER"),
                                                        region("f", 3, 5, "华为", "ORG")], ground_truth=True)]),
        # submitted with no region: a text without entities
        task(4, {"text": "嗯。"}, [annotation(41, [])]),
        # no annotation, full predictions (a snapshot export): unreviewed, read only with use_predictions
        task(5, {"text": "赵六访问伦敦"}, predictions=[{"id": 51, "model_version": "m1", "score": 0.4,
                                                   "result": [region("g", 4, 6, "伦敦", "GPE", score=0.4)]}]),
        # nothing to read: skipped and counted, never a text without entities
        task(6, {"text": "没人标注的句子"}),
        task(7, {"text": "预测只有编号"}, predictions=[71]),
        task(8, {"text": "全部被跳过"}, [annotation(81, [], cancelled=True)]),
        # skipped by the annotator, with the model's pre-annotation in full: never training data
        task(9, {"text": "孙七在深圳"}, [annotation(91, [], cancelled=True)],
             predictions=[{"id": 92, "model_version": "m1", "result": [region("h", 3, 5, "深圳", "GPE")]}]),
    ]
    path = export_file(tmp_path, tasks)
    assert detect_format(path) == "label-studio"
    docs, report = read_dataset(path)
    assert [d.id for d in docs] == ["1", "2", "3", "4"]
    assert spans(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]
    assert spans(docs[1]) == [(0, 2, "PER", "李四")]
    assert spans(docs[2]) == [(0, 2, "PER", "王五"), (3, 5, "ORG", "华为")]
    assert docs[3].entities == []
    assert report.format == "label-studio" and (report.docs, report.entities, report.skipped) == (4, 5, 0)
    warnings = "\n".join(report.warnings)
    for expected in ("1 task(s) with predictions but no annotation were skipped", "--use-predictions",
                     "1 task(s) without annotations were skipped", "2 task(s) the annotator skipped (was_cancelled)",
                     "list predictions by id only", "1 task(s) have several annotations"):
        assert expected in warnings
    docs, report = read_dataset(path, use_predictions=True)  # opt-in: unreviewed predictions taken as gold
    assert [d.id for d in docs] == ["1", "2", "3", "4", "5"] and spans(docs[4]) == [(4, 6, "GPE", "伦敦")]
    assert "1 document(s) are unreviewed model predictions read as gold: 5" in "\n".join(report.warnings)


def test_json_export_regions_other_results_text_key_and_ids(tmp_path):
    relation = {"from_id": "a", "to_id": "b", "type": "relation", "direction": "right", "labels": []}
    choice = {"id": "c", "from_name": "sentiment", "to_name": "sentence", "type": "choices",
              "value": {"choices": ["positive"]}}
    tasks = [
        # the config reads $sentence, not $text; the task data also holds a source field
        task(9, {"sentence": "张三和李四", "source": "weibo", "id": "doc-9"},
             [annotation(1, [region("a", 0, 2, "张三", "PER", to_name="sentence"),
                             region("b", 3, 5, "李四", "PER", "NAME", to_name="sentence"), relation, choice])]),
    ]
    docs, report = read_label_studio(export_file(tmp_path, tasks))
    assert docs[0].id == "doc-9" and docs[0].text == "张三和李四"
    # a region with two labels is two entities (overlapping, counted)
    assert spans(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "NAME", "李四"), (3, 5, "PER", "李四")]
    assert report.overlaps == 1
    assert any("not text labels were ignored: choices (1), relation (1)" in w for w in report.warnings)


def test_utf16_offsets_of_old_exports_are_converted(tmp_path):
    text = "😀张三在北京"  # the emoji is one code point but two UTF-16 units
    tasks = [task(1, {"text": text}, [annotation(1, [region("a", 2, 4, "张三", "PER"),
                                                     region("b", 5, 7, "北京", "GPE")])])]
    docs, report = read_label_studio(export_file(tmp_path, tasks))
    assert spans(docs[0]) == [(1, 3, "PER", "张三"), (4, 6, "GPE", "北京")]
    assert any("2 region(s) had UTF-16 offsets" in w for w in report.warnings)


@pytest.mark.parametrize("bad_region, problem", [
    ({"start": 0, "end": 2, "text": "张三", "labels": []}, "needs 'labels'"),
    ({"start": "0", "end": 2, "text": "张三", "labels": ["PER"]}, "value.start must be an integer"),
    ({"start": 0, "end": 2, "text": "李四", "labels": ["PER"]}, "does not match text[0:2] = '张三'"),
])
def test_bad_regions_name_file_and_line(tmp_path, bad_region, problem):
    good = task(1, {"text": "王五"}, [annotation(1, [])])
    bad = task(2, {"text": "张三去北京"}, [annotation(2, [{"id": "x", "from_name": "label", "to_name": "text",
                                                       "type": "labels", "value": bad_region}])])
    path = export_file(tmp_path, [good, bad])
    line = [k for k, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text == "  {"][1]
    with pytest.raises(InputError) as err:
        read_label_studio(path)
    assert err.value.line == line and problem in err.value.problem and str(path) in str(err.value)
    docs, report = read_label_studio(path, skip_invalid=True)
    assert [d.id for d in docs] == ["1"] and report.skipped == 1


def test_not_an_array_and_ambiguous_text_field(tmp_path):
    not_array = tmp_path / "one.json"
    not_array.write_text(json.dumps(task(1, {"text": "x"})), encoding="utf-8")
    with pytest.raises(InputError, match="one JSON array of tasks"):
        read_label_studio(not_array)
    two_strings = export_file(tmp_path, [task(1, {"title": "标题", "body": "正文"}, [annotation(1, [])])])
    with pytest.raises(InputError, match=r"cannot tell which task data field holds the text \(title, body\)"):
        read_label_studio(two_strings)


# ---------------------------------------------------------------------------------------------- JSON-MIN


def test_json_min_export(tmp_path):
    records = [  # newest annotation first, as Label Studio writes JSON-MIN
        {"text": "张三在北京工作。", "id": 1,
         "label": [{"start": 0, "end": 2, "text": "张三", "labels": ["PER"]},
                   {"start": 3, "end": 5, "text": "北京", "labels": ["GPE"]}],
         "annotator": 2, "annotation_id": 12, "created_at": "2024-05-07T10:00:00.000000Z",
         "updated_at": "2024-05-07T10:00:00.000000Z", "lead_time": 8.1},
        {"text": "张三在北京工作。", "id": 1,
         "label": [{"start": 0, "end": 2, "text": "张三", "labels": ["PER"]}],
         "annotator": 1, "annotation_id": 11, "created_at": "2024-05-06T10:00:00.000000Z",
         "updated_at": "2024-05-06T10:00:00.000000Z", "lead_time": 5.0},
        {"text": "嗯。", "id": 2, "annotator": "ann@example.com", "annotation_id": 13,
         "created_at": "2024-05-06T11:00:00.000000Z", "updated_at": "2024-05-06T11:00:00.000000Z", "lead_time": 1.0},
        {"text": "没人标注", "id": 3, "annotator": None, "annotation_id": None, "created_at": None,
         "updated_at": None, "lead_time": None},
    ]
    path = export_file(tmp_path, records, "project-3-at-2024-05-07-min.json")
    assert detect_format(path) == "label-studio"
    docs, report = read_dataset(path)
    assert [(d.id, spans(d)) for d in docs] == [
        ("1", [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]), ("2", [])]
    warnings = "\n".join(report.warnings)
    assert "1 JSON-MIN record(s) repeat a task id" in warnings and "1 task(s) without annotations" in warnings
    assert "the documents have task ids (export JSON to keep data.id)" in warnings


def test_prepare_uses_predictions_only_when_asked(tmp_path):
    pre = [{"id": 1, "model_version": "m", "result": [region("a", 0, 2, "张三", "PER")]}]
    tasks = [task(k, {"text": f"张三第{k}次来"}, [annotation(k, [region("a", 0, 2, "张三", "PER")])]) for k in range(6)]
    tasks += [task(10, {"text": "张三没人看过"}, predictions=pre),
              task(11, {"text": "张三被跳过了"}, [annotation(11, [], cancelled=True)], predictions=pre)]
    path = export_file(tmp_path, tasks)
    for flag, ids in (([], set(map(str, range(6)))), (["--use-predictions"], {*map(str, range(6)), "10"})):
        out = tmp_path / f"out{len(flag)}"
        assert cli.main(["prepare", "--input", str(path), "--out", str(out), "--dev", "0", "--test", "0", *flag]) == 0
        assert {json.loads(x)["id"] for x in (out / "train.jsonl").read_text("utf-8").splitlines()} == ids


def test_prepare_reads_a_label_studio_export(tmp_path):
    tasks = [task(k, {"text": f"张三第{k}次去北京"}, [annotation(k, [region("a", 0, 2, "张三", "PER"),
                                                                region("b", len(f"张三第{k}次去"),
                                                                       len(f"张三第{k}次去") + 2, "北京", "GPE")])])
             for k in range(1, 21)]
    report = prepare(PrepareConfig(input=str(export_file(tmp_path, tasks)), out=str(tmp_path / "out"), plot=False))
    assert report.read.format == "label-studio" and sum(report.split_sizes.values()) == 20
    assert report.label_source == "built-in: ccfbdci" and report.stats["all"]["entities"] == 40


# --------------------------------------------------------------------------------------------- the writers


ROWS = [
    {"id": "d1", "text": "张三在北京工作。", "entities": [{"start": 0, "end": 2, "label": "PER", "text": "张三", "score": 0.91},
                                                   {"start": 3, "end": 5, "label": "GPE", "text": "北京", "score": 0.42}]},
    {"id": "d2", "text": "嗯。", "entities": []},
    {"id": "d3", "text": "李四在上海", "entities": [{"start": 0, "end": 2, "label": "PER", "text": "李四"},
                                               {"start": None, "end": None, "label": "ORG", "text": "华为"}]},
]


def test_pre_annotation_tasks_and_labeling_config(tmp_path):
    first = label_studio_task(ROWS[0], "nerft-run")
    assert first == {
        "data": {"text": "张三在北京工作。", "id": "d1"},
        "predictions": [{"model_version": "nerft-run", "score": 0.42, "result": [
            {"id": "e0", "from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": 0, "end": 2, "text": "张三", "labels": ["PER"]}, "score": 0.91},
            {"id": "e1", "from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": 3, "end": 5, "text": "北京", "labels": ["GPE"]}, "score": 0.42}]}]}
    assert "score" not in label_studio_task(ROWS[1], "m")["predictions"][0]  # nothing to rank by
    third = label_studio_task(ROWS[2], "m")["predictions"][0]["result"]
    assert [r["value"]["text"] for r in third] == ["李四"]  # an entity without offsets cannot be placed

    labels = LabelSet.from_dict([{"code": "PER", "name": "人名"}, {"code": "A&B", "name": "A&B"}, "X\"Y"])
    root = ET.fromstring(labeling_config(labels))
    tags = root.find("Labels")
    assert (tags.get("name"), tags.get("toName")) == ("label", "text")
    assert [(x.get("value"), x.get("hint")) for x in tags.findall("Label")] == [
        ("PER", "人名"), ("A&B", None), ('X"Y', None)]
    assert root.find("Text").attrib == {"name": "text", "value": "$text"}


def test_written_tasks_read_back_to_the_same_spans(tmp_path):
    work = tmp_path / "pred.nerft.jsonl"
    work.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    out = tmp_path / "pred.json"
    files = write_tool_file(work, out, "label-studio", ccfbdci_labels(), "nerft-run")
    assert files == [out, config_file(out)] and config_file(out).name == "pred.label_config.xml"
    docs, report = read_dataset(out, use_predictions=True)  # no annotations yet: read from the predictions
    assert [(d.id, spans(d)) for d in docs] == [
        ("d1", [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]), ("d2", []), ("d3", [(0, 2, "PER", "李四")])]
    assert "3 document(s) are unreviewed model predictions read as gold: d1, d2, d3" in report.warnings[-1]


def test_cli_predict_writes_label_studio_tasks(tmp_path, tiny_tokenizer):
    from helpers_models import shared_run_dir

    run_dir = shared_run_dir(tiny_tokenizer)
    inp = tmp_path / "in.jsonl"
    texts = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错"]
    inp.write_text("".join(json.dumps({"id": f"t{k}", "text": t}, ensure_ascii=False) + "\n"
                           for k, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "tasks.json"
    args = ["predict", "--model", str(run_dir), "--input", str(inp), "--output", str(out), "--output-format",
            "label-studio", "--constrained", "--max-new-tokens", "8", "--no-progress"]
    assert cli.main(args) == 0
    work = tmp_path / "tasks.nerft.jsonl"
    rows = [json.loads(x) for x in work.read_text(encoding="utf-8").splitlines()]
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert [t["data"] for t in tasks] == [{"text": r["text"], "id": r["id"]} for r in rows]
    assert [[(x["value"]["start"], x["value"]["end"], x["value"]["labels"][0]) for x in t["predictions"][0]["result"]]
            for t in tasks] == [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in rows]
    assert sum(len(r["entities"]) for r in rows) > 0
    assert tasks[0]["predictions"][0]["model_version"] == f"nerft-{run_dir.name}"
    assert ET.fromstring((tmp_path / "tasks.label_config.xml").read_text(encoding="utf-8")).find("Labels") is not None
    before = work.read_text(encoding="utf-8")
    assert cli.main(args) == 0  # a second run resumes: nothing left to predict, the same files
    assert work.read_text(encoding="utf-8") == before and json.loads(out.read_text(encoding="utf-8")) == tasks


def test_output_format_needs_an_output(capsys):
    assert cli.main(["predict", "--model", "nowhere", "--output-format", "doccano", "x"]) == 2
    assert "--output-format goes with --input and --output" in capsys.readouterr().err


# ------------------------------------------------------------------------------- a real Label Studio (slow)


def label_studio_command() -> list[str] | None:
    """How to start Label Studio: ``NERFT_LABEL_STUDIO`` (a ``label-studio`` executable, e.g. one installed in its
    own environment), else the ``label_studio`` package of this interpreter (``pip install nerft[labelstudio]``)."""
    exe = os.environ.get("NERFT_LABEL_STUDIO")
    if exe:
        return [exe]
    try:
        import label_studio  # noqa: F401
    except ImportError:
        return None
    found = shutil.which("label-studio", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "label_studio.server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A Label Studio server on 127.0.0.1 with its own data folder, a user and a legacy API token."""

    TOKEN = "nerft-test-token-0123456789"

    def __init__(self, command: list[str], data_dir: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK":
               "true", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false"}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir / "server.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*command, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(data_dir), "--username", "nerft@example.com", "--password", "nerft-test-pass",
             "--user-token", self.TOKEN, "--enable-legacy-api-token"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening yet
                time.sleep(2)
                continue
            time.sleep(2)
        raise TimeoutError(f"Label Studio did not answer in {seconds:.0f} s; see {self.log.name}")

    def api(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers={
            "Authorization": f"Token {self.TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            payload = r.read()
        return json.loads(payload) if payload else None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_round_trip_through_a_real_label_studio(tmp_path):
    command = label_studio_command()
    if command is None:
        pytest.skip("Label Studio is not installed (pip install 'nerft[labelstudio]', or NERFT_LABEL_STUDIO=path "
                    "to a label-studio executable)")
    labels = ccfbdci_labels()
    docs = [Document("a1", "张三在北京😀工作。", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")]),
            Document("a2", "嗯。", []),
            Document("a3", "联合国秘书长访问了巴黎和伦敦", [Entity(0, 3, "ORG", "联合国"), Entity(9, 11, "GPE", "巴黎"),
                                                      Entity(12, 14, "GPE", "伦敦")])]
    work = tmp_path / "pre.nerft.jsonl"
    work.write_text("".join(json.dumps(d.to_dict() | {"entities": [e.to_dict() | {"score": 0.5} for e in d.entities]},
                                       ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    pre = tmp_path / "pre.json"
    write_tool_file(work, pre, "label-studio", labels, "nerft-test")

    server = LabelStudio(command, tmp_path / "ls-data")
    try:
        server.wait(600)
        project = server.api("POST", "/api/projects", {
            "title": "nerft round trip", "label_config": config_file(pre).read_text(encoding="utf-8")})
        imported = server.api("POST", f"/api/projects/{project['id']}/import",
                              json.loads(pre.read_text(encoding="utf-8")))
        assert (imported["task_count"], imported["prediction_count"]) == (3, 3)
        tasks = server.api("GET", f"/api/tasks?project={project['id']}&fields=all")
        tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
        by_doc = {t["data"]["id"]: t for t in tasks}
        # an annotator accepts a1's pre-annotation as it is and corrects a3 (drops 伦敦); a2 stays unreviewed
        accepted = by_doc["a1"]["predictions"][0]["result"]
        corrected = [r for r in by_doc["a3"]["predictions"][0]["result"] if r["value"]["text"] != "伦敦"]
        for doc_id, result in (("a1", accepted), ("a3", corrected)):
            server.api("POST", f"/api/tasks/{by_doc[doc_id]['id']}/annotations",
                       {"result": [{k: v for k, v in r.items() if k != "score"} for r in result]})
        snapshot = server.api("POST", f"/api/projects/{project['id']}/exports", {
            "title": "nerft", "serialization_options": {"predictions": {"only_id": False}}})
        for _ in range(60):
            if server.api("GET", f"/api/projects/{project['id']}/exports/{snapshot['id']}")["status"] == "completed":
                break
            time.sleep(1)
        request = urllib.request.Request(
            f"{server.base}/api/projects/{project['id']}/exports/{snapshot['id']}/download?exportType=JSON",
            headers={"Authorization": f"Token {server.TOKEN}"})
        exported = tmp_path / "export.json"
        with urllib.request.urlopen(request, timeout=60) as r:
            exported.write_bytes(r.read())
    finally:
        server.stop()

    out = tmp_path / "prepared"
    assert cli.main(["prepare", "--input", str(exported), "--out", str(out), "--dev", "0", "--test", "0",
                     "--no-plot", "--use-predictions"]) == 0  # a2, unreviewed, is read from its prediction
    read_back = {d["id"]: d for d in map(json.loads, (out / "train.jsonl").read_text(encoding="utf-8").splitlines())}
    expected = {d.id: d.to_dict() for d in docs}
    expected["a3"]["entities"] = expected["a3"]["entities"][:2]  # the annotator's correction
    assert read_back == expected
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["format"] == "label-studio"
    assert any("1 document(s) are unreviewed model predictions read as gold: a2" in w
               for w in stats["read"]["warnings"])


def test_declared_encoding(tmp_path):
    path = tmp_path / "gbk.json"
    path.write_bytes(json.dumps([task(1, {"text": "张三来了"}, [annotation(1, [region("a", 0, 2, "张三", "PER")])])],
                                ensure_ascii=False).encode("gb18030"))
    docs, _ = read_label_studio(path, encoding="gb18030")
    assert spans(docs[0]) == [(0, 2, "PER", "张三")]
    with pytest.raises(InputError, match="not valid utf-8"):
        read_label_studio(path)
