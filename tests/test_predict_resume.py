"""What predict --output may be resumed onto: only a file predict wrote, with the same settings (the resume stamp);
a growing input's unfinished last line; FIFOs and devices as --input or --output (real files, a real FIFO)."""

import json
import os

import pytest
from helpers_models import shared_run_dir

from nerft.cli import main
from nerft.inference.base import Prediction
from nerft.labels import ccfbdci_labels
from nerft.predict.files import predict_file, read_inputs, stamp_file
from nerft.schema import Entity, NerftError


class Finder:
    """Finds 北京 (LOC) and 张三 (PER); records the texts it was given."""

    labels = ccfbdci_labels()
    name = "finder"

    def __init__(self):
        self.seen: list[str] = []

    def predict_detailed(self, texts, labels=None):
        self.seen += texts
        return [Prediction([Entity(i, i + 2, lab, w, 1.0) for w, lab in (("北京", "LOC"), ("张三", "PER"))
                            for i in range(len(t)) if t.startswith(w, i) and (labels is None or lab in labels)])
                for t in texts]


def rows(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_a_gold_split_with_the_same_ids_is_never_appended_to(tmp_path, tiny_tokenizer):
    docs = [{"id": f"d{k}", "text": f"张三去北京{k}", "entities": []} for k in range(4)]
    gold = tmp_path / "test.jsonl"
    gold.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[:2]), "utf-8")
    before = gold.read_bytes()
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n" for d in docs))
    with pytest.raises(NerftError, match="not a nerft prediction file"):
        predict_file(Finder(), inp, gold, progress=False)
    assert gold.read_bytes() == before
    code = main(["predict", "--model", str(shared_run_dir(tiny_tokenizer)), "--input", str(inp), "--output",
                 str(gold)])
    assert code == 2 and gold.read_bytes() == before


def test_resume_needs_the_same_labels_and_options(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("张三去北京\n北京欢迎张三\n", "utf-8")
    out = tmp_path / "out.jsonl"
    stamp = {"model": {"model": "/runs/a"}, "decoding": {"min_score": 0.0}}
    assert predict_file(Finder(), inp, out, labels=["PER"], stamp=stamp, progress=False) == 2
    written = out.read_bytes()
    assert json.loads(stamp_file(out).read_text())["labels"] == ["PER"]
    with pytest.raises(NerftError, match=r"other settings \(labels: \['PER'\] then, None now"):
        predict_file(Finder(), inp, out, stamp=stamp, progress=False)
    with pytest.raises(NerftError, match="decoding"):
        predict_file(Finder(), inp, out, labels=["PER"], stamp={**stamp, "decoding": {"min_score": 0.5}},
                     progress=False)
    with pytest.raises(NerftError, match="model"):
        predict_file(Finder(), inp, out, labels=["PER"], stamp={**stamp, "model": {"model": "/runs/b"}},
                     progress=False)
    assert out.read_bytes() == written  # nothing mixed in
    assert predict_file(Finder(), inp, out, labels=["PER"], stamp=stamp, progress=False) == 0  # same: resumes


def test_the_cli_stamp_covers_decoding_flags(tmp_path, tiny_tokenizer):
    run = str(shared_run_dir(tiny_tokenizer))
    inp = tmp_path / "in.txt"
    inp.write_text("张三去北京\n", "utf-8")
    out = tmp_path / "out.jsonl"
    base = ["predict", "--model", run, "--input", str(inp), "--output", str(out), "--max-new-tokens", "4"]
    assert main(base) == 0
    assert main([*base, "--min-score", "0.5"]) == 2
    assert main(base) == 0 and len(rows(out)) == 1


def test_an_unfinished_last_line_is_not_a_document_yet(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": "张三在北京"}\n{"id": "b", "text": "北京', "utf-8")  # b half written
    out = tmp_path / "out.jsonl"
    finder = Finder()
    assert predict_file(finder, inp, out, progress=False) == 1 and finder.seen == ["张三在北京"]
    with open(inp, "a", encoding="utf-8") as f:
        f.write('欢迎张三"}\n')
    assert predict_file(finder, inp, out, progress=False) == 1  # the completed line, once, resumed
    assert [(r["id"], r["text"]) for r in rows(out)] == [("a", "张三在北京"), ("b", "北京欢迎张三")]
    txt = tmp_path / "in.txt"
    txt.write_text("张三\n北京", "utf-8")
    assert read_inputs(txt) == [("1", "张三")]
    txt.write_text("张三\n北京\n", "utf-8")
    assert read_inputs(txt) == [("1", "张三"), ("2", "北京")]


@pytest.mark.parametrize("kind", ["fifo", "devnull"])
def test_a_fifo_or_a_device_as_output_is_refused_before_the_model_loads(tmp_path, capsys, kind):
    inp = tmp_path / "in.txt"
    inp.write_text("张三\n", "utf-8")
    if kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    else:
        target = "/dev/null"
    code = main(["predict", "--model", "/no/such/run", "--input", str(inp), "--output", str(target)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert ("is a FIFO (named pipe)" if kind == "fifo" else "is a character device") in err


def test_a_fifo_or_a_device_as_input_says_what_it_is(tmp_path, capsys):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for path, words in ((pipe, "is a FIFO (named pipe), not a regular file"),
                        ("/dev/zero", "is a character device, not a regular file")):
        assert main(["prepare", "--input", str(path), "--out", str(tmp_path / "p")]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "does not exist" not in err and "\n" not in err
