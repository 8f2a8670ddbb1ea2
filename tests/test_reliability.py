"""Reliability of the data and CLI paths: input encodings, poisoned inputs, readers given the wrong format,
evaluate's matching and label rules, one-line errors for every command, atomic outputs and full disks.

Full disks are simulated by making a write raise ``OSError(ENOSPC)`` (tests/test_faults.py, marked e2e, also runs the
real thing on a small tmpfs when it can)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from nerft.cli import main
from nerft.evaluate import EvaluateConfig, evaluate
from nerft.fileio import atomic_dir
from nerft.inference.base import Prediction
from nerft.jsonl import JsonlAppender, cut_torn_tail, iter_jsonl, read_documents, write_jsonl
from nerft.predict.files import predict_file, read_inputs
from nerft.prepare import PrepareConfig, prepare
from nerft.readers import (
    WrongFormatError,
    read_chinese_ner_sft,
    read_cluener,
    read_conll,
    read_dataset,
    read_nerft,
)
from nerft.schema import Document, Entity, InputError, NerftError
from nerft.textio import detect_encoding, iter_lines, read_text

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def sft_row(text: str, *entities: tuple[int, int, str]) -> dict:
    return {"text": text, "entities": [{"start_idx": s, "end_idx": e, "entity_text": text[s:e], "entity_label": lab}
                                       for s, e, lab in entities]}


def lines_of(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


SFT_ROWS = [sft_row(f"张三去北京开会{i}", (0, 2, "PER"), (3, 5, "GPE")) for i in range(20)]


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; it must exit 2 with exactly one ``nerft <cmd>: error: ...`` line and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"nerft {argv[0]}: error: "), err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ------------------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(("encoding", "data", "expected"), [
    ("utf-8", "张三".encode(), "utf-8"),
    ("utf-8-sig", "张三".encode("utf-8-sig"), "utf-8"),
    ("utf-16-le+bom", "\ufeff张三".encode("utf-16-le"), "utf-16"),
    ("utf-16-be+bom", "\ufeff张三".encode("utf-16-be"), "utf-16"),
    ("gbk", "张三去北京".encode("gbk"), "gb18030"),
    ("gb18030", "张三𠀀".encode("gb18030"), "gb18030"),
    ("ascii", b"plain text", "utf-8"),
])
def test_auto_detects_bom_utf8_and_gb18030(tmp_path, encoding, data, expected):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    assert detect_encoding(path) == expected
    assert read_text(path, "auto") in ("张三", "张三去北京", "张三𠀀", "plain text")


def test_undecodable_bytes_name_line_and_byte_offset(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes("第一行\n第二行\n".encode() + "第三行".encode("gbk") + b"\n")
    with pytest.raises(InputError, match=r"mixed.txt, line 3: not valid utf-8 at byte 20 of the file") as info:
        list(iter_lines(path))
    assert "--encoding" in str(info.value)
    with pytest.raises(InputError, match=r"line 3: not valid utf-8 at byte 20"):
        read_text(path)
    binary = tmp_path / "binary.dat"
    binary.write_bytes(b"ok\n" + bytes(range(128, 256)))
    with pytest.raises(InputError, match=r"binary.dat, line 2: cannot detect the encoding.*byte 3"):
        detect_encoding(binary)
    with pytest.raises(NerftError, match="unknown encoding 'utf-9'"):
        read_text(path, "utf-9")


def test_utf16_lines_are_numbered_like_utf8(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("甲\r\n乙\n\n丙".encode("utf-16"))
    assert list(iter_lines(path, "auto")) == [(1, "甲"), (2, "乙"), (3, ""), (4, "丙")]
    assert list(iter_lines(path, "utf-16")) == list(iter_lines(path, "auto"))


def write_encoded(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(text.encode(encoding))
    return path


CONLL = "张\tB-PER\n三\tI-PER\n去\tO\n北\tB-GPE\n京\tI-GPE\n\n李\tB-PER\n四\tI-PER\n"
CLUENER = json.dumps({"text": "张三去北京", "label": {"name": {"张三": [[0, 1]]}}}, ensure_ascii=False, indent=2) + "\n"


@pytest.mark.parametrize(("reader", "name", "content"), [
    (read_chinese_ner_sft, "d.jsonl", lines_of(SFT_ROWS[:3])),
    (read_nerft, "d.jsonl", lines_of([Document(str(i), "张三去北京", [Entity(0, 2, "PER", "张三")]).to_dict()
                                      for i in range(3)])),
    (read_cluener, "d.json", CLUENER * 2),
    (read_conll, "d.conll", CONLL),
])
@pytest.mark.parametrize("encoding", ["gbk", "utf-16", "utf-8-sig"])
def test_every_reader_reads_other_encodings_with_auto(tmp_path, reader, name, content, encoding):
    reference, _ = reader(write_encoded(tmp_path / f"u8-{name}", content, "utf-8"))
    path = write_encoded(tmp_path / name, content, encoding)
    docs, _ = reader(path, encoding="auto")
    assert [(d.text, d.entities) for d in docs] == [(d.text, d.entities) for d in reference] and docs
    if encoding == "gbk":
        with pytest.raises(InputError, match=r", line [12]: not valid utf-8 at byte \d+ of the file"):
            reader(path)


@pytest.mark.parametrize(("reader", "name", "content", "line"), [
    (read_conll, "d.conll", CONLL, 7),
    (read_cluener, "d.json", CLUENER * 2, 15),
    (read_nerft, "d.jsonl", lines_of([{"text": "甲"}, {"text": "乙"}, {"text": "张三"}]), 3),
])
def test_readers_name_the_line_and_byte_of_a_bad_byte(tmp_path, reader, name, content, line):
    lines = content.split("\n")
    head = "\n".join(lines[:line - 1]) + "\n"
    data = head.encode() + b"\xff" + ("\n".join(lines[line - 1:])).encode()  # a byte no UTF-8 text has
    path = tmp_path / name
    path.write_bytes(data)
    offset = len(head.encode())
    with pytest.raises(InputError, match=rf"{name}, line {line}: not valid utf-8 at byte {offset} of the file"):
        reader(path)


def test_read_dataset_and_prepare_take_an_encoding(tmp_path, capsys):
    path = write_encoded(tmp_path / "gbk.jsonl", lines_of(SFT_ROWS), "gbk")
    docs, report = read_dataset(path, encoding="auto")
    assert report.format == "chinese_ner_sft" and len(docs) == 20 and docs[0].entities[0].text == "张三"
    one_line_error(capsys, ["prepare", "--input", str(path), "--out", str(tmp_path / "o")],
                   "gbk.jsonl, line 1: not valid utf-8 at byte 10", "--encoding")
    assert not (tmp_path / "o").exists()
    assert main(["prepare", "--input", str(path), "--out", str(tmp_path / "o"), "--encoding", "gb18030",
                 "--no-plot"]) == 0
    assert read_documents(tmp_path / "o" / "train.jsonl")[0].text.startswith("张三去北京")


# -------------------------------------------------------------------------------------------- poisoned JSON text


def test_lone_surrogate_escapes_are_refused_where_they_are_read(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "bad \\ud800 x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"s.jsonl, line 2: holds a lone surrogate \\ud800"):
        list(iter_jsonl(path))
    rows = list(iter_jsonl(path, tolerant=True))
    assert rows[0] == (1, {"text": "ok 😀"}) and isinstance(rows[1][1], InputError)
    docs, report = read_nerft(path, skip_invalid=True)
    assert [d.text for d in docs] == ["ok 😀"] and report.skipped == 1
    cluener = tmp_path / "c.json"
    cluener.write_text('[{"text": "a"},\n {"text": "b\\udfff"}]\n', encoding="utf-8")
    docs, report = read_cluener(cluener, skip_invalid=True)
    assert [d.text for d in docs] == ["a"] and "lone surrogate" in report.warnings[0]


# -------------------------------------------------------------------------------------- readers, wrong --format


def test_a_reader_given_another_formats_file_says_so(tmp_path):
    sft = write_encoded(tmp_path / "sft.jsonl", lines_of(SFT_ROWS), "utf-8")
    cluener_lines = write_encoded(tmp_path / "c.json", lines_of(
        [{"text": "张三去北京", "label": {"name": {"张三": [[0, 1]]}}}] * 3), "utf-8")
    with pytest.raises(WrongFormatError, match=r"sft.jsonl: no record has `label`.*20 of 20 have `entities`"):
        read_cluener(sft)
    for fmt in ("chinese_ner_sft", "nerft"):
        with pytest.raises(WrongFormatError, match=rf"no record has `entities`, the field format {fmt} reads.*`label`"):
            read_dataset(cluener_lines, fmt)
    with pytest.raises(WrongFormatError, match=r"sft.jsonl, line 1: starts like JSON, not like CoNLL"):
        read_conll(sft)
    with pytest.raises(WrongFormatError, match=r"line 1: starts like JSON"):
        read_conll(write_encoded(tmp_path / "pretty.txt", CLUENER, "utf-8"))
    # the right reader still works, and a file without any annotation field is just unannotated text
    assert len(read_chinese_ner_sft(sft)[0]) == 20
    plain = write_encoded(tmp_path / "texts.json", lines_of([{"text": "甲"}, {"text": "乙", "meta": [1]}]), "utf-8")
    assert [d.entities for d in read_cluener(plain)[0]] == [[], []]
    # a CoNLL row for the character '{' is not JSON
    assert read_conll(write_encoded(tmp_path / "brace.conll", "{\tO\n张\tB-PER\n", "utf-8"))[0][0].text == "{张"


def test_prepare_with_the_wrong_format_fails_instead_of_dropping_every_entity(tmp_path, capsys):
    sft = write_encoded(tmp_path / "sft.jsonl", lines_of(SFT_ROWS), "utf-8")
    one_line_error(capsys, ["prepare", "--input", str(sft), "--out", str(tmp_path / "o"), "--input-format", "cluener",
                            "--labels", "ccfbdci"], "no record has `label`", "--input-format")
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------------------------------------- evaluate


GOLD = [Document(f"d{i}", f"张三第{i}次去北京", [Entity(0, 2, "PER", "张三"), Entity(len(f"张三第{i}次去"), len(f"张三第{i}次去") + 2, "GPE", "北京")])
        for i in range(16)]


def evaluate_rows(tmp_path, rows, **options):
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gold, GOLD)
    write_jsonl(pred, rows)
    return evaluate(EvaluateConfig(gold=str(gold), pred=str(pred), quiet=True, **options))


def perfect_rows() -> list[dict]:
    return [d.to_dict() for d in GOLD]


def test_a_shuffled_file_with_one_row_without_id_is_refused(tmp_path):
    rows = perfect_rows()[::-1]  # shuffled: only ids can pair them with the gold
    assert evaluate_rows(tmp_path, rows)["strict"]["micro"]["f1"] == 1.0
    del rows[5]["id"]
    with pytest.raises(InputError, match=r"pred.jsonl, line 6: this prediction has no `id`, but line 1 has one"):
        evaluate_rows(tmp_path, rows)
    no_ids = [{k: v for k, v in r.items() if k != "id"} for r in perfect_rows()]
    assert evaluate_rows(tmp_path, no_ids)["strict"]["micro"]["f1"] == 1.0  # none has one: line order


def test_unknown_predicted_labels_are_refused_unless_allowed(tmp_path, capsys):
    rows = perfect_rows()
    rows[3]["entities"][0]["label"] = "PERSON"
    rows[7]["entities"].append({"start": 2, "end": 3, "label": "CITY", "text": "第"})
    with pytest.raises(InputError, match=r"pred.jsonl, line 4: label 'PERSON' is not in the label set \(PER, GPE\)"):
        evaluate_rows(tmp_path, rows)
    m = evaluate_rows(tmp_path, rows, allow_unknown_labels=True)
    assert m["unknown_labels"] == {"PERSON": 1, "CITY": 1}
    assert m["strict"]["per_label"]["PERSON"]["fp"] == 1 and m["strict"]["micro"]["fn"] == 1
    # the CLI prints and reports them
    out = tmp_path / "report"
    assert main(["evaluate", "--gold", str(tmp_path / "gold.jsonl"), "--pred", str(tmp_path / "pred.jsonl"),
                 "--allow-unknown-labels", "--out", str(out)]) == 0
    assert "'PERSON' (1), 'CITY' (1)" in capsys.readouterr().out
    assert "labels outside the label set" in (out / "report.md").read_text(encoding="utf-8")
    assert evaluate_rows(tmp_path, perfect_rows())["unknown_labels"] == {}


def test_labels_json_beside_the_gold_is_the_label_set(tmp_path):
    """A prepared test split may lack a label the model knows: the prepared folder's labels.json has it."""
    rows = perfect_rows()
    rows[0]["entities"].append({"start": 2, "end": 3, "label": "ORG", "text": "第"})
    with pytest.raises(InputError, match="label 'ORG' is not in the label set"):
        evaluate_rows(tmp_path, rows)
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["PER", "GPE", "ORG"]}), encoding="utf-8")
    m = evaluate_rows(tmp_path, rows)
    assert m["strict"]["per_label"]["ORG"]["fp"] == 1 and m["unknown_labels"] == {}


def test_evaluate_reads_other_encodings(tmp_path, capsys):
    gold = write_encoded(tmp_path / "gold.jsonl", "".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n"
                                                          for d in GOLD), "gb18030")
    pred = write_encoded(tmp_path / "pred.jsonl", gold.read_bytes().decode("gb18030"), "utf-16")
    one_line_error(capsys, ["evaluate", "--gold", str(gold), "--pred", str(pred)], "gold.jsonl, line 1")
    assert main(["evaluate", "--gold", str(gold), "--pred", str(pred), "--encoding", "auto", "--quiet"]) == 0
    m = evaluate(EvaluateConfig(gold=str(gold), pred=str(pred), encoding="auto", quiet=True))
    assert m["strict"]["micro"]["f1"] == 1.0


# ------------------------------------------------------------------------------------- predict inputs, outputs


class FakePredictor:
    """Tags the first character of each text; enough to check what predict_file writes."""

    labels = None

    def predict_detailed(self, texts, labels=None):
        return [Prediction([Entity(0, 1, "PER", t[0])], [f"PER:{t[0]}"]) for t in texts]


def test_predict_reads_inputs_in_other_encodings(tmp_path):
    texts = ["张三去北京", "李四在上海", "王五"]
    txt = write_encoded(tmp_path / "in.txt", "\n".join(texts) + "\n", "gbk")
    with pytest.raises(InputError, match=r"in.txt, line 1: not valid utf-8 at byte 0"):
        read_inputs(txt)
    assert read_inputs(txt, "auto") == [("1", "张三去北京"), ("2", "李四在上海"), ("3", "王五")]
    jsonl = write_encoded(tmp_path / "in.jsonl", lines_of([{"id": f"x{i}", "text": t} for i, t in enumerate(texts)]),
                          "utf-16")
    assert [t for _, t in read_inputs(jsonl, "auto")] == texts
    out = tmp_path / "out.jsonl"
    assert predict_file(FakePredictor(), txt, out, progress=False, encoding="gb18030") == 3
    assert [r["entities"][0]["text"] for _, r in iter_jsonl(out)] == ["张", "李", "王"]


def test_predict_never_writes_into_a_file_it_did_not_write(tmp_path):
    """It used to cut such a file at its first line that is not JSON, then append: a user's file was lost."""
    inp = write_encoded(tmp_path / "in.txt", "张三\n李四\n", "utf-8")
    victims = {
        "gbk.jsonl": lines_of(SFT_ROWS).encode("gbk"),  # another dataset, in GBK
        "notes.txt": b"x",  # one line without a newline: looked like a torn tail
        "data.jsonl": b'{"text": "a"}\n{"text": "b"}\nnot json\n{"text": "c"}\n',
        "torso.jsonl": b'{"id": "1", "text": "\xe5\xbc\xa0\xe4\xb8\x89", "entities": []}\n[1, 2',
    }
    for name, data in victims.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(NerftError, match="not a nerft prediction file"):
            predict_file(FakePredictor(), inp, path, progress=False)
        assert path.read_bytes() == data, name


def test_cut_torn_tail_cuts_only_a_torn_row(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b')
    assert cut_torn_tail(path) == 2 and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(b'{"a": 1}\n{"a": 2}')  # complete, only the newline is missing: kept
    assert cut_torn_tail(path) == 2 and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(b'{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(NerftError, match="line 2: not a JSON line"):
        cut_torn_tail(path)
    assert path.read_bytes() == b'{"a": 1}\nnot json\n{"a": 3}\n'


def test_a_full_disk_mid_corpus_loses_nothing_on_rerun(tmp_path, monkeypatch):
    texts = [f"{chr(0x4e00 + i)}某某说了第{i}句话" for i in range(22)]
    inp = write_encoded(tmp_path / "in.txt", "\n".join(texts) + "\n", "utf-8")
    reference = tmp_path / "reference.jsonl"
    predict_file(FakePredictor(), inp, reference, chunk_size=4, progress=False)

    class HalfWrites:
        """The third write puts half its bytes (and a few) on disk, then the disk is full."""

        def __init__(self, file):
            self.file, self.calls = file, 0

        def write(self, data):
            self.calls += 1
            if self.calls == 3:
                self.file.write(bytes(data[: len(data) // 2 + 7]))  # cut inside a row, rows of one length or not
                raise ENOSPC
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    real_init = JsonlAppender.__init__

    def flaky_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._file = HalfWrites(self._file)

    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(JsonlAppender, "__init__", flaky_init)
    with pytest.raises(NerftError, match=r"cannot write .*out.jsonl: No space left on device"):
        predict_file(FakePredictor(), inp, out, chunk_size=4, progress=False)
    written = out.read_bytes()
    assert not written.endswith(b"\n") and written.count(b"\n") == 10  # 2 chunks, half the third, a torn row
    monkeypatch.setattr(JsonlAppender, "__init__", real_init)
    assert predict_file(FakePredictor(), inp, out, chunk_size=4, progress=False) == 22 - 10
    assert out.read_bytes() == reference.read_bytes()


# ----------------------------------------------------------------------------- prepare: atomic output folder


def sft_file(tmp_path: Path, rows=SFT_ROWS) -> Path:
    return write_encoded(tmp_path / "data.jsonl", lines_of(rows), "utf-8")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_in_the_middle_of_prepare_keeps_the_previous_folder(tmp_path, monkeypatch, capsys):
    source, out = sft_file(tmp_path), tmp_path / "prepared"
    assert main(["prepare", "--input", str(source), "--out", str(out), "--no-plot", "--seed", "1"]) == 0
    before = snapshot(out)
    import nerft.prepare.core

    real_write_json = nerft.prepare.core.write_json

    def full_after_the_splits(path, obj):  # train/dev/test.jsonl are written by then
        if Path(path).name == "labels.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write_json(path, obj)

    monkeypatch.setattr(nerft.prepare.core, "write_json", full_after_the_splits)
    line = one_line_error(capsys, ["prepare", "--input", str(source), "--out", str(out), "--no-plot", "--seed", "2"],
                          f"cannot write {out} (labels.json): No space left on device",
                          "the previous folder is unchanged")
    assert "Traceback" not in line
    assert snapshot(out) == before  # not a mix of seed 1 and seed 2 files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "prepared"]  # no staging folder left
    fresh = tmp_path / "fresh"
    one_line_error(capsys, ["prepare", "--input", str(source), "--out", str(fresh), "--no-plot"],
                   "nothing was written")
    assert not fresh.exists()
    monkeypatch.setattr(nerft.prepare.core, "write_json", real_write_json)
    assert main(["prepare", "--input", str(source), "--out", str(out), "--no-plot", "--seed", "2"]) == 0
    assert snapshot(out) != before and json.loads((out / "stats.json").read_text())["seed"] == 2


def test_prepare_replaces_only_its_own_output(tmp_path, capsys):
    source, out = sft_file(tmp_path), tmp_path / "prepared"
    report = prepare(PrepareConfig(input=str(source), out=str(out), plot=False))
    assert json.loads((out / "stats.json").read_text())["files"] == [
        "train.jsonl", "dev.jsonl", "test.jsonl", "labels.json", "stats.md", "stats.json"]
    assert {p.name for p in report.files} == {p.name for p in out.iterdir()}
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's owner-only folder
    prepare(PrepareConfig(input=str(source), out=str(out), plot=False, seed=3))  # a previous output: replaced
    (out / "notes.md").write_text("mine", encoding="utf-8")
    one_line_error(capsys, ["prepare", "--input", str(source), "--out", str(out), "--no-plot"],
                   "holds notes.md, which prepare did not write", "--overwrite")
    assert (out / "notes.md").exists()
    assert main(["prepare", "--input", str(source), "--out", str(out), "--no-plot", "--overwrite"]) == 0
    assert not (out / "notes.md").exists()
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "--input", str(source), "--out", str(tmp_path / "empty"), "--no-plot"]) == 0
    one_line_error(capsys, ["prepare", "--input", str(source), "--out", str(tmp_path), "--overwrite"],
                   "holds the input")
    one_line_error(capsys, ["prepare", "--input", str(source), "--out", str(source)], "is a file")
    assert source.read_text(encoding="utf-8") == lines_of(SFT_ROWS)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_atomic_dir_stages_under_the_final_name_and_cleans_up(tmp_path):
    target = tmp_path / "folder"
    target.write_text("a file in the way", encoding="utf-8")
    with atomic_dir(target) as stage:
        assert stage.name == "folder" and stage.parent.parent == tmp_path
        (stage / "x").write_text("1", encoding="utf-8")
    assert (target / "x").read_text(encoding="utf-8") == "1"
    with pytest.raises(RuntimeError), atomic_dir(target) as stage:
        (stage / "y").write_text("2", encoding="utf-8")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["folder"] and not (target / "y").exists()


# ------------------------------------------------------------------------- one-line errors from every command


def test_prepare_and_evaluate_path_errors_are_one_line(tmp_path, capsys):
    source = sft_file(tmp_path)
    a_file = write_encoded(tmp_path / "a_file", "x", "utf-8")
    one_line_error(capsys, ["prepare", "--input", str(source), "--out", str(a_file / "sub")],
                   f"{a_file} is a file, not a folder")
    one_line_error(capsys, ["prepare", "--input", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")],
                   "does not exist")
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, GOLD)
    one_line_error(capsys, ["evaluate", "--gold", str(gold), "--pred", str(gold), "--out", str(a_file)],
                   f"{a_file} is a file, not a folder")
    one_line_error(capsys, ["evaluate", "--gold", str(tmp_path), "--pred", str(gold)], "is a folder")
    one_line_error(capsys, ["evaluate", "--gold", str(gold), "--pred", str(tmp_path)], "is a folder")
    binary = tmp_path / "labels.json"
    binary.write_bytes(b"\x80\x81")
    one_line_error(capsys, ["evaluate", "--gold", str(gold), "--pred", str(gold), "--labels", str(binary)],
                   "labels.json, line 1: not valid utf-8 at byte 0", "save it as UTF-8")
    config = tmp_path / "cfg.yaml"
    config.write_bytes("gold: 金".encode("gbk"))
    one_line_error(capsys, ["evaluate", "--config", str(config)], "cfg.yaml, line 1: not valid utf-8")
    one_line_error(capsys, ["evaluate", "--gold", str(gold), "--pred", str(gold), "--encoding", "nope"],
                   "unknown encoding 'nope'")


def test_a_full_disk_while_writing_names_the_file(tmp_path, monkeypatch, capsys):
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, GOLD)
    import nerft.fileio

    def no_space(fd):
        raise ENOSPC

    monkeypatch.setattr(nerft.fileio.os, "fsync", no_space)
    out = tmp_path / "eval"
    one_line_error(capsys, ["evaluate", "--gold", str(gold), "--pred", str(gold), "--out", str(out), "--quiet"],
                   f"{out / 'metrics.json'}: No space left on device")
    assert [p.name for p in out.iterdir()] == []  # no temp file left


def test_demo_path_errors_are_one_line(tmp_path, capsys):
    a_file = write_encoded(tmp_path / "a_file", "x", "utf-8")
    one_line_error(capsys, ["demo", "--out", str(a_file), "--docs", "10", "--steps", "1"],
                   f"{a_file} is a file, not a folder")


def test_predict_and_export_path_errors_are_one_line(tmp_path, capsys, tiny_tokenizer):
    from helpers_models import shared_run_dir

    run = shared_run_dir(tiny_tokenizer)
    inp = write_encoded(tmp_path / "in.txt", "张三去北京\n", "utf-8")
    a_file = write_encoded(tmp_path / "a_file", "x", "utf-8")
    base = ["predict", "--model", str(run), "--no-progress", "--max-new-tokens", "4"]
    one_line_error(capsys, [*base, "--input", str(tmp_path), "--output", str(tmp_path / "o.jsonl")], "is a folder")
    one_line_error(capsys, [*base, "--input", str(inp), "--output", str(a_file / "o.jsonl")],
                   f"{a_file} is a file, not a folder")
    one_line_error(capsys, [*base, "--input", str(inp), "--output", str(a_file)], "not a nerft prediction file")
    assert a_file.read_text(encoding="utf-8") == "x"
    gbk = write_encoded(tmp_path / "gbk.txt", "张三去北京\n", "gbk")
    one_line_error(capsys, [*base, "--input", str(gbk), "--output", str(tmp_path / "o.jsonl")],
                   "gbk.txt, line 1: not valid utf-8 at byte 0")
    assert main([*base, "--input", str(gbk), "--output", str(tmp_path / "o.jsonl"), "--encoding", "auto"]) == 0
    assert [r["text"] for _, r in iter_jsonl(tmp_path / "o.jsonl")] == ["张三去北京"]
    one_line_error(capsys, ["export", "--model", str(run), "--output", str(a_file / "merged")],
                   f"{a_file} is a file, not a folder")


def test_a_full_disk_during_export_names_the_folder(tmp_path, monkeypatch, capsys, tiny_tokenizer):
    import transformers
    from helpers_models import shared_run_dir

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as safetensors/transformers raise it: no path

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", disk_full)
    out = tmp_path / "merged"
    one_line_error(capsys, ["export", "--model", str(shared_run_dir(tiny_tokenizer)), "--output", str(out)],
                   f"cannot write {out}: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_train_path_errors_are_one_line(tmp_path, capsys):
    from nerft_helpers import char_tokenizer, save_base_model, write_splits

    base = save_base_model(tmp_path / "base", char_tokenizer())
    splits = write_splits(tmp_path / "data")
    a_file = write_encoded(tmp_path / "a_file", "x", "utf-8")
    common = ["train", "--model", str(base), "--model.device", "cpu", "--max-steps", "1", "--tracking.backend", "none"]
    one_line_error(capsys, [*common, "--train", str(tmp_path / "data"), "--out", str(tmp_path / "r")],
                   "is a folder; pass a file")
    one_line_error(capsys, [*common, "--train", splits["train"], "--out", str(a_file / "run")],
                   f"{a_file} is a file, not a folder")
    gbk_labels = write_encoded(tmp_path / "labels.yaml", "- 人名\n", "gbk")
    one_line_error(capsys, [*common, "--train", splits["train"], "--labels", str(gbk_labels),
                            "--out", str(tmp_path / "r")], "labels.yaml, line 1: not valid utf-8")


def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoints(tmp_path, monkeypatch, tiny_tokenizer):
    import torch
    from helpers_models import make_lora_model
    from safetensors import SafetensorError

    from nerft.train import checkpoint

    model = make_lora_model(tokenizer=tiny_tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    position = {"step": 1, "epoch": 0, "step_in_epoch": 1, "best_f1": -1.0, "best_step": None}
    checkpoint.save_checkpoint(tmp_path, model, optimizer, scheduler, position, keep=2)

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    with pytest.raises(NerftError, match=r"cannot write .*step-2: .*No space left on device.*previous copy"):
        checkpoint.save_checkpoint(tmp_path, model, optimizer, scheduler, {**position, "step": 2}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-1"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]  # nothing half-written
    checkpoint.load_checkpoint(tmp_path / "checkpoints" / "step-1")
