import json
import shutil

import pytest
from helpers_models import shared_run_dir

from nerft import cli
from nerft.config import ConfigError
from nerft.inference.loading import load_predictor
from nerft.inference.options import PredictOptions
from nerft.jsonl import write_jsonl
from nerft.lexicon import LEXICON_FILE, Lexicon
from nerft.schema import Document, Entity, NerftError


def doc(text: str, *mentions: tuple[str, str]) -> Document:
    """A document with the first occurrence after the previous mention of each (mention, label)."""
    entities, pos = [], 0
    for mention, label in mentions:
        start = text.index(mention, pos)
        entities.append(Entity(start, start + len(mention), label, mention))
        pos = start + len(mention)
    return Document(str(len(text)), text, entities)


# 北京 annotated in 4 of its 5 occurrences (one document mentions it twice, annotating one); 中国 in 1 of 4;
# 上海 annotated twice as GPE and twice as LOC (a tie); 北京大学 once, as ORG.
TRAIN = [
    doc("北京很大。", ("北京", "GPE")),
    doc("他去了北京，又回到北京。", ("北京", "GPE")),
    doc("北京和中国。", ("北京", "GPE"), ("中国", "GPE")),
    doc("北京大学在北京。", ("北京大学", "ORG"), ("北京", "GPE")),
    doc("中国人。中国队。中国话。"),
    doc("上海上海上海上海", ("上海", "LOC"), ("上海", "GPE"), ("上海", "LOC"), ("上海", "GPE")),
]


def test_counts_every_occurrence_annotated_or_not():
    lex = Lexicon.from_documents(TRAIN)
    assert set(lex.entries) == {"北京", "中国", "北京大学", "上海"}
    beijing = lex.entries["北京"]
    assert beijing.occurrences == 6 and sum(beijing.labels.values()) == 4  # 北京大学 holds an unannotated 北京
    assert beijing.rate == pytest.approx(4 / 6) and beijing.label == "GPE"
    assert lex.entries["中国"].occurrences == 4 and lex.entries["中国"].rate == pytest.approx(0.25)
    assert lex.entries["上海"].label == "GPE"  # a 2-2 tie goes to the alphabetically first label
    # neighbours seen at least twice: 北京 starts a text 3 times (annotated twice), ends a sentence 2 times (once)
    assert beijing.contexts == {"<": [3, 2], ">。": [2, 1]}
    assert lex.consistent(0.6, 5) == {"北京": "GPE"}
    assert lex.consistent(0.6, 1) == {"北京": "GPE", "北京大学": "ORG", "上海": "GPE"}
    assert lex.consistent(0.2, 4) == {"北京": "GPE", "中国": "GPE", "上海": "GPE"}


def test_complete_adds_left_out_occurrences_and_relabels():
    lex = Lexicon.from_documents(TRAIN)
    text = "北京大学的人在北京见了中国和上海的人。"
    predicted = [Entity(0, 4, "ORG", "北京大学"), Entity(14, 16, "LOC", "上海", 0.9)]
    out = lex.complete(text, predicted, min_rate=0.6, min_count=4)
    # 北京 inside the predicted 北京大学 is not added (overlap); the free 北京 is, with the rate as its score;
    # 中国 (annotated 1 time in 4) is not; the predicted 上海 takes the majority label, keeping its score
    assert [(e.start, e.end, e.label, e.text) for e in out] == [
        (0, 4, "ORG", "北京大学"), (7, 9, "GPE", "北京"), (14, 16, "GPE", "上海")]
    assert out[1].score == pytest.approx(4 / 6) and out[2].score == 0.9
    assert all(text[e.start:e.end] == e.text for e in out)
    # before 。 北京 was annotated 1 time in 2: below 0.6 it is not added there, where its overall rate would say yes
    assert lex.complete("又到北京。", [], 0.6, 4) == []
    assert [(e.text, e.score) for e in lex.complete("又到北京。", [], 0.5, 4)] == [("北京", 0.5)]
    # nothing occurs 7 times: the prediction comes back as it was
    assert lex.complete(text, predicted, min_rate=0.6, min_count=7) == predicted


def test_complete_prefers_the_longest_string_and_keeps_labels_allowed():
    lex = Lexicon.from_documents(TRAIN)
    text = "北京大学"
    assert [(e.text, e.label) for e in lex.complete(text, [], 0.6, 1)] == [("北京大学", "ORG")]
    # ORG not wanted: the shorter 北京 inside is added instead, and nothing is given a label outside the set
    assert [(e.text, e.label) for e in lex.complete(text, [], 0.6, 1, allowed={"GPE"})] == [("北京", "GPE")]
    kept = [Entity(0, 2, "LOC", "上海")]
    assert lex.complete("上海", kept, 0.4, 1, allowed={"LOC"}) == kept  # majority GPE is not allowed: no relabel


def test_hallucinated_mentions_pass_through(tmp_path):
    lex = Lexicon.from_documents(TRAIN)
    ungrounded = Entity(None, None, "PER", "某人")
    out = lex.complete("北京", [ungrounded], 0.6, 1)
    assert out[0].span == (0, 2, "GPE") and out[-1] is ungrounded


def test_save_load_round_trip_and_sources(tmp_path):
    lex = Lexicon.from_documents(TRAIN)
    lex.save(tmp_path / LEXICON_FILE)
    for source in (tmp_path / LEXICON_FILE, tmp_path):  # the file, or the run directory holding it
        again = Lexicon.load(source)
        assert again.to_dict() == lex.to_dict() and again.documents == len(TRAIN)
    train = tmp_path / "train.jsonl"
    write_jsonl(train, [d.to_dict() for d in TRAIN])
    assert Lexicon.load(train).to_dict() == lex.to_dict()


def test_bad_lexicon_files_name_the_file(tmp_path):
    with pytest.raises(NerftError, match="no such lexicon"):
        Lexicon.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(NerftError, match="bad.json: not a readable lexicon"):
        Lexicon.load(bad)
    bad.write_text(json.dumps({"labels": ["GPE"]}), encoding="utf-8")
    with pytest.raises(NerftError, match="bad.json: not a nerft lexicon"):
        Lexicon.load(bad)
    bad.write_text(json.dumps({"format": "nerft-lexicon", "entries": {"北京": {"labels": {}}}}), encoding="utf-8")
    with pytest.raises(NerftError, match="bad.json: malformed lexicon entry"):
        Lexicon.load(bad)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="lexicon_min_rate"):
        PredictOptions(lexicon_min_rate=0)
    with pytest.raises(ConfigError, match="lexicon_min_count"):
        PredictOptions(lexicon_min_count=0)


TEXTS = ["北京是中国的首都。", "他从北京大学毕业。", "今天天气不错"]


def test_predictor_completes_its_answers_from_the_lexicon(tiny_tokenizer, tmp_path):
    run = shared_run_dir(tiny_tokenizer)
    Lexicon.from_documents(TRAIN).save(tmp_path / LEXICON_FILE)
    plain = load_predictor(run, max_new_tokens=6)
    completed = load_predictor(run, max_new_tokens=6, lexicon=str(tmp_path / LEXICON_FILE), lexicon_min_rate=0.6,
                               lexicon_min_count=1)
    lex = Lexicon.load(tmp_path)
    before, after = plain.predict(TEXTS), completed.predict(TEXTS)
    assert after == [lex.complete(t, es, 0.6, 1, set(plain.labels.codes)) for t, es in zip(TEXTS, before, strict=True)]
    assert ("北京", "GPE") in {(e.text, e.label) for e in after[0]} and after[2] == before[2]


def test_a_lexicon_of_other_labels_is_refused(tiny_tokenizer, tmp_path):
    run = shared_run_dir(tiny_tokenizer)
    Lexicon.from_documents([doc("阿司匹林", ("阿司匹林", "DRUG"))]).save(tmp_path / LEXICON_FILE)
    with pytest.raises(NerftError, match="none of the model's"):
        load_predictor(run, lexicon=str(tmp_path / LEXICON_FILE))


def test_cli_flags_and_export_carry_the_lexicon(tiny_tokenizer, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(shared_run_dir(tiny_tokenizer), run)
    Lexicon.from_documents(TRAIN).save(run / LEXICON_FILE)
    assert cli.main(["predict", "--model", str(run), "--json", "--max-new-tokens", "2", "--lexicon", str(run),
                     "--lexicon-min-rate", "0.6", "--lexicon-min-count", "1", "他在北京工作。"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {"start": 2, "end": 4, "label": "GPE", "text": "北京"} in [
        {k: e[k] for k in ("start", "end", "label", "text")} for e in line["entities"]]
    assert cli.main(["export", "--model", str(run), "--output", str(tmp_path / "merged")]) == 0
    assert Lexicon.load(tmp_path / "merged").to_dict() == Lexicon.load(run).to_dict()


def test_min_score_drops_unsure_mentions_before_the_lexicon_fills_in(tiny_tokenizer, tmp_path):
    run = shared_run_dir(tiny_tokenizer)
    texts = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。",
             "他从北京大学毕业。", "李四去了黄山和长江。", "王五是华为员工，住在深圳。"]
    before = load_predictor(run, max_new_tokens=12, constrained=True).predict(texts)
    written = sorted({e.to_dict()["score"] for es in before for e in es})  # a score counts as written (4 digits)
    assert len(written) >= 2  # the random model is surer of some mentions than of others
    cut = (written[0] + written[1]) / 2
    kept = load_predictor(run, max_new_tokens=12, constrained=True, min_score=cut).predict(texts)
    assert kept == [[e for e in es if e.to_dict()["score"] >= cut] for es in before]
    assert 0 < sum(map(len, kept)) < sum(map(len, before))
    Lexicon.from_documents(TRAIN).save(tmp_path / LEXICON_FILE)
    both = load_predictor(run, max_new_tokens=12, constrained=True, min_score=cut, lexicon=str(tmp_path),
                          lexicon_min_count=1).predict(texts)
    lex = Lexicon.load(tmp_path)
    codes = set(load_predictor(run).labels.codes)
    assert both == [lex.complete(t, es, 0.5, 1, codes) for t, es in zip(texts, kept, strict=True)]
    with pytest.raises(ConfigError, match="min_score"):
        PredictOptions(min_score=1.5)


def test_hint_names_the_annotated_strings_of_a_text():
    lex = Lexicon.from_documents(TRAIN)
    # in order of first occurrence, shorter first at one position; the share rounded down to tens; 100% is kept
    # for strings always annotated; the label through the name function
    assert lex.hint("北京大学和中国", 8, str.lower) == "参考：北京=gpe 60%；北京大学=org 100%；中国=gpe 20%"
    assert lex.hint("北京大学和中国", 2) == "参考：北京=GPE 60%；北京大学=ORG 100%"
    assert lex.hint("今天天气不错", 8) == "" and lex.hint("北京", 0) == ""
    rare = Lexicon.from_documents([doc("中国", ("中国", "GPE"))] + [doc("中国人")] * 10)  # 1 in 11: under 10%
    assert rare.hint("中国", 8) == ""


def test_hint_of_a_training_document_leaves_its_own_counts_out():
    lex = Lexicon.from_documents(TRAIN)
    own = TRAIN[3]  # 北京大学在北京。: the only 北京大学; 2 of 北京's 6 occurrences, 1 of its 4 annotations
    assert lex.hint(own.text, 8, own=own) == "参考：北京=GPE 70%"  # 3 of 4
    assert lex.hint(own.text, 8) == "参考：北京=GPE 60%；北京大学=ORG 100%"  # a new text with the same words


def test_the_prompt_puts_the_hint_on_a_line_after_the_text():
    from nerft.labels import ccfbdci_labels
    from nerft.prompts import Prompt, build_prompt

    prompt = build_prompt(ccfbdci_labels())
    assert prompt.messages("北京很大", "参考：北京=GPE 60%")[1]["content"] == "北京很大\n参考：北京=GPE 60%"
    assert prompt.messages("北京很大")[1]["content"] == "北京很大"
    hinted = Prompt(prompt.system, hints=5)
    assert Prompt.from_dict(hinted.to_dict()) == hinted and "hints" not in prompt.to_dict()
