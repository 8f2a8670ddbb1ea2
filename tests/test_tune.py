"""``nerft tune``: the thresholds it chooses on dev, and that ``nerft predict --config`` with its decoding.yaml gives
exactly the entities it scored."""

import dataclasses
import json

import pytest
import yaml
from helpers_models import shared_run_dir

from nerft import cli
from nerft.config import ConfigError
from nerft.inference.base import finish_entities
from nerft.inference.loading import load_predictor
from nerft.inference.options import PredictOptions
from nerft.jsonl import write_jsonl
from nerft.labels import ccfbdci_labels
from nerft.lexicon import LEXICON_FILE, Lexicon
from nerft.schema import Document, Entity, NerftError
from nerft.tune import choose


def span(text: str, mention: str, label: str, score: float | None = None) -> Entity:
    start = text.index(mention)
    return Entity(start, start + len(mention), label, mention, score)


def test_choose_finds_a_per_label_threshold_and_the_lexicon(tmp_path):
    texts = ["北京和上海", "黄山很高", "中国队赢了", "他在杭州"]
    gold = [Document("0", texts[0], [span(texts[0], "北京", "GPE"), span(texts[0], "上海", "GPE")]),
            Document("1", texts[1], [span(texts[1], "黄山", "LOC")]),
            Document("2", texts[2], []),
            Document("3", texts[3], [span(texts[3], "杭州", "GPE")])]
    # the model: sure and right about the GPE mentions, unsure and right about 黄山, unsure and wrong about 中国
    # (no gold there: one GPE threshold fits, one overall threshold cannot), and it misses 杭州
    answers = [[span(texts[0], "北京", "GPE", 0.95), span(texts[0], "上海", "GPE", 0.97)],
               [span(texts[1], "黄山", "LOC", 0.6)],
               [span(texts[2], "中国", "GPE", 0.7)],
               []]
    train = [Document("a", "杭州很美", [span("杭州很美", "杭州", "GPE")]),
             Document("b", "杭州西湖", [span("杭州西湖", "杭州", "GPE")])]
    Lexicon.from_documents(train).save(tmp_path / LEXICON_FILE)
    lexicon_path = str(tmp_path / LEXICON_FILE)
    labels = ccfbdci_labels()
    best, report = choose(gold, answers, labels, PredictOptions(), lexicon_path, Lexicon.load(lexicon_path),
                          [0.5, 0.6, 0.7, 0.8, 0.9], [0.3, 0.5])
    assert report["answered"]["setting"] == "as answered" and report["answered"]["f1"] == pytest.approx(0.75)
    assert best.min_score == 0 and best.label_min_scores == ["GPE=0.8"] and best.lexicon == lexicon_path
    assert report["best"]["f1"] == 1.0
    # the best one overall threshold is worse: 0.8 drops 黄山 along with 中国
    assert max(r["f1"] for r in report["grid"]) < 1.0
    assert {r["label"] for r in report["per_label"]} == set(labels.codes)
    lexicon = Lexicon.load(lexicon_path)
    finished = [finish_entities(d.text, a, best, lexicon, set(labels.codes)) for d, a in zip(gold, answers, strict=True)]
    assert [[e.span for e in es] for es in finished] == [[e.span for e in d.entities] for d in gold]
    # without per-label thresholds, the lexicon still wins over none
    plain, _ = choose(gold, answers, labels, PredictOptions(), lexicon_path, lexicon, [0.5, 0.8], [0.3],
                      per_label=False)
    assert plain.label_min_scores == [] and plain.lexicon == lexicon_path


def test_label_min_scores_are_checked(tiny_tokenizer):
    assert PredictOptions(label_min_scores=["LOC=0.5"], min_score=0.9).min_score_of("LOC") == 0.5
    assert PredictOptions(label_min_scores=["LOC=0.5"], min_score=0.9).min_score_of("GPE") == 0.9
    for bad in ("LOC", "LOC=high", "LOC=1.5", "=0.5"):
        with pytest.raises(ConfigError, match="label_min_scores"):
            PredictOptions(label_min_scores=[bad])
    with pytest.raises(NerftError, match="DRUG, not among the model's label codes"):
        load_predictor(shared_run_dir(tiny_tokenizer), label_min_scores=["DRUG=0.5"])


TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。",
         "他从北京大学毕业。", "李四去了黄山和长江。", "王五是华为员工，住在深圳。"]


def test_tune_then_predict_with_its_config_gives_the_scored_entities(tiny_tokenizer, tmp_path, capsys):
    run = shared_run_dir(tiny_tokenizer)
    decoding = ["--max-new-tokens", "12", "--constrained"]
    answered = load_predictor(run, max_new_tokens=12, constrained=True).predict(TEXTS)
    scores = sorted({e.to_dict()["score"] for es in answered for e in es})
    assert len(scores) >= 2  # the random model is surer of some mentions than of others
    cut = round((scores[0] + scores[1]) / 2, 6)
    # gold: the model's surer mentions; a lexicon that would only add wrong ones (北京 is never gold here)
    gold = [Document(str(k), t, [e for e in es if e.to_dict()["score"] >= cut])
            for k, (t, es) in enumerate(zip(TEXTS, answered, strict=True))]
    assert any(d.entities for d in gold)
    write_jsonl(tmp_path / "dev.jsonl", [d.to_dict() for d in gold])
    lexdir = tmp_path / "lexicon"
    lexdir.mkdir()
    Lexicon.from_documents([Document("a", "北京很大", [span("北京很大", "北京", "GPE")])]).save(lexdir / LEXICON_FILE)
    out = tmp_path / "tune"
    argv = ["tune", "--model", str(run), "--dev", str(tmp_path / "dev.jsonl"), "--out", str(out), *decoding,
            "--min-scores", str(cut), "0.9", "--min-rates", "0.3", "--lexicon", str(lexdir), "--no-progress"]
    assert cli.main(argv) == 0
    report = json.loads((out / "tune.json").read_text(encoding="utf-8"))
    chosen = yaml.safe_load((out / "decoding.yaml").read_text(encoding="utf-8"))
    assert chosen == {"max_new_tokens": 12, "constrained": True, "min_score": cut}
    assert report["best"]["f1"] == 1.0 and report["answered"]["f1"] < 1.0
    assert len(report["grid"]) == 3 * 2  # min-scores 0, cut, 0.9; without and with the lexicon
    assert (out / "tune.md").is_file() and (out / "tune.png").is_file()

    assert cli.main(["predict", "--model", str(run), "--config", str(out / "decoding.yaml"),
                     "--input", str(tmp_path / "dev.jsonl"), "--output", str(tmp_path / "pred.jsonl")]) == 0
    assert cli.main(["evaluate", "--gold", str(tmp_path / "dev.jsonl"), "--pred", str(tmp_path / "pred.jsonl"),
                     "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["strict"]["micro"]["f1"] == report["best"]["f1"]

    # again with other candidates: the answers are reused, not written twice
    answers = (out / "dev-answers.jsonl").read_bytes()
    assert cli.main([*argv[:argv.index("--min-scores")], "--min-scores", "0.5", "--no-progress"]) == 0
    assert (out / "dev-answers.jsonl").read_bytes() == answers
    assert yaml.safe_load((out / "decoding.yaml").read_text(encoding="utf-8"))["min_score"] == 0
    # answers of another decoding are never mixed in
    capsys.readouterr()
    assert cli.main([*argv[:argv.index("--max-new-tokens")], "--dev", str(tmp_path / "dev.jsonl"),
                     "--out", str(out), "--max-new-tokens", "8", "--no-progress"]) != 0
    assert "another model or decoding" in capsys.readouterr().err
    assert cli.main([*argv, "--min-rates", "0"]) != 0
    assert "--min-rates: give values in (0, 1]" in capsys.readouterr().err


def test_a_lexicon_in_the_chosen_config_is_named_from_the_config_folder(tmp_path):
    from nerft.tune import decoding_dict

    (tmp_path / "run").mkdir()
    best = dataclasses.replace(PredictOptions(), lexicon=str(tmp_path / "run" / LEXICON_FILE), lexicon_min_rate=0.5)
    data = decoding_dict(best, tmp_path / "run" / "tune")
    assert data == {"min_score": 0.0, "lexicon": f"../{LEXICON_FILE}", "lexicon_min_rate": 0.5}
