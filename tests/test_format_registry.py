"""A fourth output format, defined here and registered with ``formats.register_format`` only: reading, units,
cutting to the last complete unit, constrained decoding, the "no entity" start and the predictor all take it
from its ``OutputFormat`` with no change anywhere else, so a new format touches one module."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pytest
import torch
from conftest import make_tiny_qwen2

from nerft.answers import answer_units, complete_prefix, read_answer, score_raw_answers
from nerft.constrained import AnswerGrammar, ConstrainedAnswer, vocab_bytes
from nerft.formats import FORMATS, Mention, OutputFormat, ParseResult, get_format, register_format
from nerft.generation import generate_batch, prompt_ids, stop_token_ids
from nerft.inference.options import PredictOptions
from nerft.inference.transformers_backend import ChainedProcessors, FirstTokenBias, TransformersPredictor
from nerft.labels import LabelSet, ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.schema import Document, Entity

LABELS = ccfbdci_labels()
TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。"]
_UNIT = re.compile(r"<([^<>|\n]+)\|([^<>|\n]+)>")


class AngleFormat(OutputFormat):
    """``<实体|标签>`` units written one after another, mention first; ``-`` when there is none."""

    name = "angle"
    none_text = "-"
    separator = ""
    unit_end = ">"
    forbidden = "<>|\n"

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        ordered = sorted(entities, key=lambda e: (e.start, e.end))
        return "".join(f"<{e.text}|{labels.name_of(e.label)}>" for e in ordered) or self.none_text

    def instruction(self, labels: LabelSet) -> str:
        return "按原文顺序输出“<实体|类型>”，没有实体时输出“-”。"

    def unit_affixes(self, label_names: Sequence[str]) -> list[tuple[str, str]]:
        return [("<", f"|{name}>") for name in label_names]

    def parse(self, text: str, labels: LabelSet) -> ParseResult:
        result = ParseResult()
        if text.strip() == self.none_text:
            return result
        for piece in self.units(text) + [text[text.rfind(">") + 1:]]:
            m = _UNIT.fullmatch(piece.strip())
            code = labels.to_code(m.group(2)) if m else None
            if code is not None:
                result.mentions.append(Mention(m.group(1), code))  # type: ignore[union-attr]
            elif piece.strip():
                result.errors.append(f"not an <实体|类型> unit: {piece!r}")
        return result

    def units(self, answer: str) -> list[str]:
        return [piece + ">" for piece in answer.split(">")[:-1] if piece.strip()]

    def may_end_unit(self, piece: str) -> bool:
        return ">" in piece


@pytest.fixture
def angle(tiny_tokenizer):
    """The format, registered for one test (after the session's tokenizer was trained on the shipped formats)."""
    fmt = register_format(AngleFormat())
    yield fmt
    del FORMATS[fmt.name]


def ents(text: str, *items: tuple[str, str]) -> list[Entity]:
    return [Entity(text.index(m), text.index(m) + len(m), code, m) for m, code in items]


def test_registered_by_name_and_once(angle):
    assert get_format("angle") is angle
    assert build_prompt(LABELS, "angle").system.endswith(angle.instruction(LABELS))
    with pytest.raises(ValueError, match="not yet taken"):
        register_format(AngleFormat())


def test_reading_units_and_the_complete_prefix_are_the_formats(angle):
    text = "张三在北京见了李四"
    answer = angle.render(ents(text, ("北京", "GPE"), ("张三", "PER")), LABELS)
    assert answer == "<张三|人名><北京|地理实体>"
    reading = read_answer(text, answer, LABELS, output_format="angle",
                          scores=[("<张三|人名>", 0.9), ("<北京|地理实体>", 0.5)])
    assert reading.parse_ok and [(e.text, e.label, e.score) for e in reading.entities] == \
        [("张三", "PER", 0.9), ("北京", "GPE", 0.5)]
    assert not read_answer(text, "<张三|人名>人名:北京", LABELS, output_format="angle").parse_ok
    assert answer_units(answer, "angle") == ["<张三|人名>", "<北京|地理实体>"]
    assert answer_units(answer) == [answer]  # the shipped formats' units would score both mentions as one
    assert complete_prefix("<张三|人名><北京|地理", "angle") == "<张三|人名>"
    gold = [Document("a", text, ents(text, ("张三", "PER"), ("北京", "GPE"))), Document("b", "嗯。", [])]
    scores = score_raw_answers(gold, [answer, "-"], LABELS, output_format="angle")
    assert scores["strict"]["micro"]["f1"] == 1.0 and scores["parse_failures"] == 0


def test_the_grammar_is_the_formats(angle):
    g = AnswerGrammar("张三在北京", ["人名", "地点"], "angle")
    assert g.can_end(b"-") and not g.can_end(b"")  # a none text: the empty answer is not one
    assert g.is_prefix("<张".encode()) and g.is_prefix("<张三|人".encode()) and not g.can_end("<张三|人".encode())
    assert g.can_end("<张三|人名><北京|地点>".encode())
    assert not g.is_prefix("<李".encode())  # not in the text
    assert not g.is_prefix("<张三|组织".encode())  # not in the label set
    assert not g.is_prefix("<张三|人名>\n".encode())  # no separator between units


class BadTail(AngleFormat):
    def unit_affixes(self, label_names: Sequence[str]) -> list[tuple[str, str]]:
        return [("<", f"：{name}>") for name in label_names]


def test_a_grammar_it_cannot_follow_is_refused():
    with pytest.raises(ValueError, match="must begin with an ASCII character"):
        AnswerGrammar("张三", ["人名"], BadTail())


@pytest.fixture
def model(tiny_tokenizer):
    model = make_tiny_qwen2(seed=3, tokenizer=tiny_tokenizer)
    with torch.no_grad():  # a random model that picks varied tokens (not only its last input token again)
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 0.05)
    return model


def test_constrained_random_model_writes_only_the_format(angle, tiny_tokenizer, model):
    ids = [prompt_ids(tiny_tokenizer, build_prompt(LABELS, "angle"), t) for t in TEXTS]
    out = generate_batch(model, tiny_tokenizer, ids, 40, ConstrainedAnswer(tiny_tokenizer, TEXTS, LABELS.names, "angle"))
    mentions = 0
    for text, g in zip(TEXTS, out, strict=True):
        answer = g.text if g.finished else angle.complete_prefix(g.text)
        parsed = angle.parse(answer, LABELS)
        assert parsed.ok and all(m.text in text for m in parsed.mentions), (answer, parsed.errors)
        mentions += len(parsed.mentions)
    assert mentions > 0, [g.text for g in out]
    unconstrained = generate_batch(model, tiny_tokenizer, ids, 40)
    assert any(not angle.parse(g.text, LABELS).ok for g in unconstrained)  # the guarantee is not vacuous
    # Its "no entity" start (the end of turn, or the none text's first token) raised: every answer is "none".
    none_start = angle.none_start_ids(tiny_tokenizer, stop_token_ids(tiny_tokenizer))
    assert vocab_bytes(tiny_tokenizer).bytes[none_start[-1]] == b"-"
    biased = ChainedProcessors([FirstTokenBias(none_start, -1e4),
                                ConstrainedAnswer(tiny_tokenizer, TEXTS, LABELS.names, "angle")])
    assert {g.text for g in generate_batch(model, tiny_tokenizer, ids, 40, biased)} <= {"-", ""}


def predictor(model, tokenizer, **options) -> TransformersPredictor:
    return TransformersPredictor(model, tokenizer, LABELS, build_prompt(LABELS, "angle"),
                                 PredictOptions(constrained=True, batch_size=4, **options))


def test_the_predictor_decodes_the_format_end_to_end(angle, tiny_tokenizer, model):
    results = predictor(model, tiny_tokenizer).predict_detailed(TEXTS)
    for text, p in zip(TEXTS, results, strict=True):
        [answer] = p.answers
        assert p.finished and p.parse_failures == 0 and p.hallucinated == 0, answer
        assert all(text[e.start:e.end] == e.text and e.score is not None for e in p.entities), answer
        # the repetition guard sees the format's units: a unit is not written again and again
        units = angle.units(answer)
        assert all(units.count(u) <= 2 for u in units), answer
    assert any(len(p.entities) > 1 for p in results)  # several units in an answer, each scored on its own
    unguarded = generate_batch(model, tiny_tokenizer, [prompt_ids(tiny_tokenizer, build_prompt(LABELS, "angle"),
                                                                  TEXTS[0])], 40,
                               ConstrainedAnswer(tiny_tokenizer, TEXTS[:1], LABELS.names, "angle"))
    assert max(angle.units(unguarded[0].text).count(u) for u in angle.units(unguarded[0].text)) > 2
    # answers cut at their token bound keep their last complete unit
    cut = predictor(model, tiny_tokenizer, max_new_tokens=14).predict_detailed(TEXTS)
    assert not any(p.finished for p in cut)
    assert all(p.answers[0].endswith(">") and p.parse_failures == 0 and p.entities for p in cut)
    # and a "no entity" start raised makes every answer the none text, read as no entity
    nothing = predictor(model, tiny_tokenizer, none_bias=-1e4).predict_detailed(TEXTS)
    assert [(p.answers, p.entities, p.parse_failures) for p in nothing] == [(["-"], [], 0)] * len(TEXTS)


def test_a_registered_format_is_one_training_and_export_configs_accept(angle):
    from nerft.config import ConfigError, from_dict
    from nerft.prepare.trainer_formats import SftExportConfig
    from nerft.train import TrainConfig

    assert from_dict(TrainConfig, {"data": {"output_format": angle.name}}).data.output_format == angle.name
    assert from_dict(SftExportConfig, {"output_format": angle.name}).output_format == angle.name
    with pytest.raises(ConfigError, match="'data.output_format' must be one of .*angle.*, got 'xml'"):
        from_dict(TrainConfig, {"data": {"output_format": "xml"}})
