"""nerft in a spaCy pipeline (``nlp.add_pipe("nerft")``, spaCy 3.8): doc.ents and doc.spans from a tiny tagging
run, scores as a span extension, nlp.pipe batched through nerft, offsets inside a spaCy token placed as
char_span allows and counted when they cannot be, displacy on the result. spaCy's corpus format: predict writes a
DocBin, prepare reads one, spacy train learns from nerft's labels. Skips, saying why, without spaCy."""

from __future__ import annotations

import json

import pytest
from helpers_tagger import build_tagger_run

spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install 'nerft[spacy]')")

TEXT = "今天我们去了北京工作张三"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokenizer):
    return build_tagger_run(tmp_path_factory.mktemp("spacy"), tiny_tokenizer)[0]


def test_add_pipe_sets_ents_spans_and_scores(run):
    nlp = spacy.blank("zh")
    component = nlp.add_pipe("nerft", config={"model": str(run), "options": {"device": "cpu"}})
    doc = nlp(TEXT)
    assert [(e.text, e.label_) for e in doc.ents] == [("北京", "GPE"), ("张三", "PER")]
    assert [(s.start_char, s.end_char) for s in doc.spans["nerft"]] == [(6, 8), (10, 12)]
    assert all(0 < s._.nerft_score <= 1 for s in doc.spans["nerft"])
    docs = list(nlp.pipe([TEXT, "天气不错", TEXT], batch_size=2))
    assert [[e.text for e in d.ents] for d in docs] == [["北京", "张三"], [], ["北京", "张三"]]
    assert component.unaligned == 0
    html = spacy.displacy.render(doc, style="ent", page=False)
    assert "北京" in html and "GPE" in html


def test_an_entity_inside_a_spacy_token_is_placed_or_counted(run):
    """An English-style tokenizer makes 去了北京工作 one token: 'expand' marks the token, 'strict' cannot place
    the entity and counts it (never a silent drop)."""
    text = "we 今天去了北京工作 and 张三"
    expanded = spacy.blank("en")
    expanded.add_pipe("nerft", config={"model": str(run)})
    doc = expanded(text)
    assert "今天去了北京工作" in [e.text for e in doc.ents] and doc.user_data["nerft_unaligned"] == []
    strict = spacy.blank("en")
    component = strict.add_pipe("nerft", config={"model": str(run), "alignment_mode": "strict"})
    doc = strict(text)
    lost = doc.user_data["nerft_unaligned"]
    assert [x["text"] for x in lost] == ["北京"] and component.unaligned == 1
    assert [e.text for e in doc.ents] == ["张三"]


# ------------------------------------------------------------------------- DocBin: predict writes it, prepare reads it


def _rows() -> list[dict]:
    return [{"id": "d1", "text": "𝒳张三在北京大学", "entities": [
                {"start": 1, "end": 3, "label": "PER", "text": "张三", "score": 0.9},
                {"start": 4, "end": 6, "label": "GPE", "text": "北京", "score": 0.5},
                {"start": 4, "end": 8, "label": "ORG", "text": "北京大学", "score": 0.8}]},
            {"id": "d2", "text": "e\u0301 无", "entities": [{"start": None, "end": None, "label": "PER", "text": "李四"}]}]


def test_a_written_docbin_keeps_overlaps_scores_ids_and_reads_back(tmp_path):
    from nerft.jsonl import write_jsonl
    from nerft.labels import ccfbdci_labels
    from nerft.predict.writers import write_tool_file
    from nerft.readers import detect_format, read_dataset

    work, out = tmp_path / "pred.nerft.jsonl", tmp_path / "pred.spacy"
    write_jsonl(work, _rows())
    assert write_tool_file(work, out, "spacy", ccfbdci_labels(), "m") == [out]
    docs = list(spacy.tokens.DocBin().from_disk(out).get_docs(spacy.blank("zh").vocab))
    assert [d.text for d in docs] == ["𝒳张三在北京大学", "e\u0301 无"]  # a character outside the BMP, a combining mark
    assert [(e.text, e.label_) for e in docs[0].ents] == [("张三", "PER"), ("北京大学", "ORG")]  # longest kept
    assert [(s.start_char, s.end_char, s._.nerft_score) for s in docs[0].spans["nerft"]] == [
        (1, 3, 0.9), (4, 6, 0.5), (4, 8, 0.8)]
    assert [d.user_data["id"] for d in docs] == ["d1", "d2"] and list(docs[1].ents) == []
    assert detect_format(out) == "spacy"
    read, report = read_dataset(out)
    assert (report.format, report.docs, report.entities, report.overlaps) == ("spacy", 2, 3, 1)
    assert [(d.id, [(e.start, e.end, e.label, e.text) for e in d.entities]) for d in read] == [
        ("d1", [(1, 3, "PER", "张三"), (4, 6, "GPE", "北京"), (4, 8, "ORG", "北京大学")]), ("d2", [])]


def test_a_docbin_from_spacy_itself_reads_with_file_ids_and_a_damaged_one_names_the_file(tmp_path):
    from nerft.readers import read_dataset
    from nerft.schema import InputError

    nlp = spacy.blank("en")
    doc = nlp("Ada Lovelace lived in London")
    doc.ents = [doc.char_span(0, 12, "PER"), doc.char_span(22, 28, "LOC")]
    path = tmp_path / "corpus.spacy"
    spacy.tokens.DocBin(docs=[doc, nlp("nothing here")]).to_disk(path)
    read, _ = read_dataset(path, "spacy")
    assert [(d.id, [(e.start, e.end, e.label) for e in d.entities]) for d in read] == [
        ("corpus-1", [(0, 12, "PER"), (22, 28, "LOC")]), ("corpus-2", [])]
    damaged = tmp_path / "damaged.spacy"
    damaged.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError) as err:
        read_dataset(damaged)
    assert str(damaged) in str(err.value) and "not a spaCy DocBin" in str(err.value)


def test_spacy_trains_on_the_docbin_nerft_predict_writes(run, tmp_path):
    """The round trip of issue 42: a nerft run labels texts into a DocBin, prepare reads it as a dataset, and
    ``spacy train`` learns from it (a few steps: it runs, and its NER knows nerft's labels)."""
    import subprocess
    import sys

    from nerft import cli
    from nerft.prepare import PrepareConfig, prepare

    texts = ["今天我们去了北京工作张三", "张三去了北京", "天气不错", "我们在北京", "张三今天工作", "北京天气不错"] * 4
    inp = tmp_path / "texts.txt"
    inp.write_text("\n".join(texts) + "\n", encoding="utf-8")
    silver = tmp_path / "silver.spacy"
    assert cli.main(["predict", "--model", str(run), "--input", str(inp), "--output", str(silver),
                     "--output-format", "spacy", "--device", "cpu", "--no-progress"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "silver.nerft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(len(r["entities"]) for r in rows) >= 24
    report = prepare(PrepareConfig(input=str(silver), out=str(tmp_path / "data"), plot=False))
    assert report.read.format == "spacy" and {"GPE", "PER"} <= set(report.labels.codes)  # CCFBDCI's set, known
    assert report.stats["all"]["entities"] == sum(len(r["entities"]) for r in rows)

    config, model = tmp_path / "ner.cfg", tmp_path / "spacy-model"
    spacy_cli = [sys.executable, "-m", "spacy"]
    subprocess.run([*spacy_cli, "init", "config", str(config), "--lang", "zh", "--pipeline", "ner", "--optimize",
                    "efficiency", "--force"], check=True, capture_output=True)
    trained = subprocess.run([*spacy_cli, "train", str(config), "--output", str(model), "--paths.train", str(silver),
                              "--paths.dev", str(silver), "--training.max_steps", "6", "--training.eval_frequency",
                              "3"], capture_output=True, text=True)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    nlp = spacy.load(model / "model-last")
    assert sorted(nlp.get_pipe("ner").labels) == ["GPE", "PER"]
