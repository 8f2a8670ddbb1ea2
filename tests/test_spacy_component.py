"""nerft in a spaCy pipeline (``nlp.add_pipe("nerft")``, spaCy 3.8): doc.ents and doc.spans from a tiny tagging
run, scores as a span extension, nlp.pipe batched through nerft, offsets inside a spaCy token placed as
char_span allows and counted when they cannot be, displacy on the result. Skips, saying why, without spaCy."""

from __future__ import annotations

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
