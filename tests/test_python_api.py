"""The Python API (nerft.load, nerft.evaluate; docs/python.md): every code block of the page runs as written on a
tiny tagging run in place of runs/ccfbdci, and the API's contract (a text or a list, labels, close, a hub id from
the cache, typed scores) holds."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from helpers_tagger import build_tagger_run

import nerft

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokenizer):
    return build_tagger_run(tmp_path_factory.mktemp("api"), tiny_tokenizer)[0]


def test_every_example_of_the_python_page_runs(run, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    spacy_installed = importlib.util.find_spec("spacy") is not None  # the spacy extra (installed by .ci/run)
    for code in blocks:
        if "import spacy" in code and not spacy_installed:
            continue
        exec(compile(code.replace('"runs/ccfbdci"', repr(str(run))), str(DOCS), "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert "strict F1 0.500, boundary F1 1.000" in out and "1.0 1" in out


def test_load_gives_entities_for_a_text_or_a_list_and_closes(run):
    with nerft.load(run, device="cpu") as ner:
        one = ner("今天我们去了北京工作张三")
        many = ner(["今天我们去了北京工作张三", "天气不错"])
        assert many[0] == one and isinstance(many, list) and len(many) == 2
        assert [(e.text, e.label) for e in one] == [("北京", "GPE"), ("张三", "PER")]
        assert all("今天我们去了北京工作张三"[e.start:e.end] == e.text and 0 <= e.score <= 1 for e in one)
        assert [e.label for e in ner("今天我们去了北京工作张三", labels=["PER"])] == ["PER"]
        assert ner.labels.codes == ["LOC", "PER", "GPE", "ORG"] and ner.info["kind"] == "tagger"
        with pytest.raises(TypeError):
            ner([1, 2])
    with pytest.raises(nerft.api.NerftError, match="closed"):
        ner("北京")


def test_load_opens_a_hub_id_from_the_cache_offline(run, tmp_path, monkeypatch):
    """A model published with nerft export --push-to-hub, once downloaded: the same folder, by its id."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--me--ner-tagger"
    shutil.copytree(run, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with nerft.load("me/ner-tagger") as ner:
        assert [e.text for e in ner("今天我们去了北京工作张三")] == ["北京", "张三"]
        assert ner.folder == repo / "snapshots" / commit
    with pytest.raises(nerft.api.NerftError, match="neither a local folder nor a model on the Hugging Face Hub"):
        nerft.load("me/not-there")


def test_evaluate_returns_typed_scores():
    import nerft.evaluate  # noqa: F401 - the CLI module of the same name once replaced the function when imported first

    gold = [nerft.Document("a", "张三在北京", [nerft.Entity(0, 2, "PER", "张三"), nerft.Entity(3, 5, "GPE", "北京")])]
    scores = nerft.evaluate(gold, [[nerft.Entity(0, 2, "PER", "张三")]], labels=["PER", "GPE", "ORG"])
    assert (scores.precision, scores.recall) == (1.0, 0.5) and abs(scores.f1 - 2 / 3) < 1e-9
    assert list(scores.per_label) == ["PER", "GPE", "ORG"] and scores.per_label["GPE"].support == 1
    assert scores.documents == 1 and scores.partial_f1 == scores.f1
