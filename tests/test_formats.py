"""Output formats: exact renders, a parser that never raises and recovers every well-formed entity."""

from __future__ import annotations

import json
import time
import unicodedata

import pytest
from conftest import shared_path
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nerft.formats import FORMATS, TUTORIAL_NONE, Mention, ParseResult, get_format, parse_answer
from nerft.labels import ccfbdci_labels, cluener_labels
from nerft.schema import Entity

LABELS = ccfbdci_labels()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ents(*items: tuple[int, str, str]) -> list[Entity]:
    return [Entity(start, start + len(text), label, text) for start, label, text in items]


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def test_render_each_format():
    e = ents((0, "GPE", "南京"), (3, "PER", "张三"))
    assert get_format("tutorial").render(e, LABELS) == (
        '{"entity_text": "南京", "entity_label": "地理实体"}{"entity_text": "张三", "entity_label": "人名"}'
    )
    assert get_format("jsonl").render(e, LABELS) == (
        '{"entity_text": "南京", "entity_label": "地理实体"}\n{"entity_text": "张三", "entity_label": "人名"}'
    )
    assert get_format("compact").render(e, LABELS) == "地理实体:南京\n人名:张三"


def test_render_sorts_by_position_and_handles_no_entities():
    e = ents((5, "PER", "张三"), (0, "GPE", "南京"))
    assert get_format("compact").render(e, LABELS) == "地理实体:南京\n人名:张三"
    assert get_format("tutorial").render([], LABELS) == TUTORIAL_NONE
    assert get_format("jsonl").render([], LABELS) == ""
    assert get_format("compact").render([], LABELS) == ""


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        get_format("xml")


@pytest.mark.shared
def test_tutorial_target_is_byte_identical_to_the_tutorial():
    """The tutorial's own f-string construction (label: the first entity_names entry it knows), on every document."""
    path = shared_path("data", "ccfbdci", "ccfbdci.jsonl")
    match_names = ["地点", "人名", "地理实体", "组织"]
    fmt = get_format("tutorial")
    checked = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            target = ""
            for e in d["entities"]:
                label = next(n for n in e["entity_names"] if n in match_names)
                target += f'{{"entity_text": "{e["entity_text"]}", "entity_label": "{label}"}}'
            target = target or TUTORIAL_NONE
            if any(c in e["entity_text"] for e in d["entities"] for c in '"\\'):
                continue  # the tutorial does not escape; nerft writes valid JSON there
            gold = [Entity(e["start_idx"], e["end_idx"], e["entity_label"], e["entity_text"]) for e in d["entities"]]
            assert fmt.render(gold, LABELS) == target
            checked += 1
    assert checked > 15_000


# ----------------------------------------------------------------------------------------------------------------
# Parsing: hand-made answers


def parse(text: str) -> ParseResult:
    return parse_answer(text, LABELS)


def pairs(result: ParseResult) -> list[tuple[str, str]]:
    return [(m.text, m.label) for m in result.mentions]


@pytest.mark.parametrize("answer", ["", "  ", TUTORIAL_NONE, "没有找到任何实体。", "无", "[]", "```\n```", '"没有找到任何实体"'])
def test_empty_answers_are_well_formed(answer):
    result = parse(answer)
    assert result.mentions == [] and result.ok


@pytest.mark.parametrize(
    ("answer", "expected", "n_errors"),
    [
        # tutorial, concatenated, and a mention holding full-width quotes
        ('{"entity_text": "南京", "entity_label": "地理实体"}{"entity_text": "“张”三", "entity_label": "人名"}',
         [("南京", "GPE"), ("“张”三", "PER")], 0),
        # code fence, list brackets, a truncated object followed by a whole one on the next line
        ('```json\n[{"entity_text": "南京", "entity_label": "地理实体"},\n{"entity_text": "北", "entity_la\n'
         '{"entity_text": "x", "entity_label": "组织"}]\n```', [("南京", "GPE"), ("x", "ORG")], 1),
        # a missing closing brace in the middle of a tutorial answer loses nothing after it
        ('{"entity_text": "南京", "entity_label": "地理实体"{"entity_text": "北京", "entity_label": "地点"}',
         [("北京", "LOC")], 1),
        # cut off right after the last field: the entity is kept, the truncation reported
        ('{"entity_text": "南京", "entity_label": "地理实体"', [("南京", "GPE")], 1),
        # cut off inside a field: nothing invented
        ('{"entity_text": "南京", "entity_label": "地理', [], 1),
        # compact, full-width colon, codes instead of names, a mention with braces and a colon
        ("地点:北京\n组织：{abc}\nPER: 张三\n书名:a:b", [("北京", "LOC"), ("{abc}", "ORG"), ("张三", "PER")], 1),
        # prose before JSON on the same line, and a prose line
        ('以下是结果：{"entity_text": "南京", "entity_label": "GPE"}\n希望对你有帮助', [("南京", "GPE")], 2),
        # the tutorial's unescaped quotes
        ('{"entity_text": "他说"好"", "entity_label": "人名"}', [('他说"好"', "PER")], 0),
        # a Python dict repr, trailing commas, full-width JSON punctuation
        ("{'entity_text': '南京', 'entity_label': '地点'}", [("南京", "LOC")], 0),
        ('{"entity_text": "南京", "entity_label": "地点",}', [("南京", "LOC")], 0),
        ("｛“entity_text”：“南京”，“entity_label”：“地点”｝", [("南京", "LOC")], 0),
        # other JSON shapes models produce
        ('{"地点": ["北京", "上海"], "人名": "张三"}', [("北京", "LOC"), ("上海", "LOC"), ("张三", "PER")], 0),
        ('{"entities": [{"text": "北京", "label": "GPE"}]}', [("北京", "GPE")], 0),
        # pretty-printed
        ('{\n  "entity_text": "a",\n  "entity_label": "人名"\n}', [("a", "PER")], 0),
        # unknown labels and incomplete objects are errors, not entities
        ('{"entity_text": "a", "entity_label": "动物"}\n动物:猫\n{"entity_text": "b"}', [], 3),
        # duplicated lines come back duplicated (grounding counts the duplicates)
        ("地点:北京\n地点:北京", [("北京", "LOC"), ("北京", "LOC")], 0),
        # mixed formats keep the order written
        ('地点:北京\n{"entity_text": "南京", "entity_label": "地理实体"}\n人名:张三',
         [("北京", "LOC"), ("南京", "GPE"), ("张三", "PER")], 0),
        # bullets and numbering
        ("1. 地点:北京\n- 人名:张三", [("北京", "LOC"), ("张三", "PER")], 0),
        ("{{{{", [], 4),
        ('}}}"', [], 1),
        ('{"entity_text": 3, "entity_label": "地点"}', [], 1),
        ('{"entity_text": "  ", "entity_label": "地点"}', [], 1),
        ("[1, 2]\n{[}]", [], 2),
    ],
)
def test_parse_hand_made(answer, expected, n_errors):
    result = parse(answer)
    assert pairs(result) == expected, result
    assert len(result.errors) == n_errors, result.errors
    assert result.ok == (n_errors == 0)


def test_each_format_object_parses_its_own_renders_with_cluener_labels():
    labels = cluener_labels()
    e = ents((0, "book", "《招商银行：投资》"), (1, "company", "招商银行"), (12, "name", 'a"b\\c'))
    for fmt in FORMATS.values():
        result = fmt.parse(fmt.render(e, labels), labels)
        assert result.ok and pairs(result) == [(x.text, x.label) for x in e]


def test_compact_replaces_line_breaks_in_mentions():
    answer = get_format("compact").render(ents((0, "ORG", "北京\n大学")), LABELS)
    assert answer == "组织:北京 大学"
    assert pairs(parse(answer)) == [("北京 大学", "ORG")]


# ----------------------------------------------------------------------------------------------------------------
# Parsing: properties

label_codes = st.sampled_from(LABELS.codes)
# Mentions the JSON formats must carry whatever they hold.
any_mention = st.text(min_size=1, max_size=12).filter(lambda s: s.strip())
# Compact lines hold one stripped line each.
line_mention = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc")), min_size=1, max_size=12
).map(str.strip).filter(bool)
CHINESE = "北京南国张三李四中国人民银行大学：:“”{}[]\"'，,\n 没有找到任何实体地点人名组织"


def _one_line(mention: str) -> bool:
    """A mention the compact format can carry: one stripped line (see test_compact_round_trips_single_line_mentions)."""
    return mention == mention.strip() and not any(unicodedata.category(c) in ("Zl", "Zp", "Cc") for c in mention)


def check_reading(text: str) -> None:
    """What parse_answer reads from any text: without reaching its catch-all, the same in every format, and
    canonical (the mentions read back the same from their clean rendering); where no escape or repair can change a
    mention, each is a piece of the text itself."""
    result = parse(text)
    assert not [e for e in result.errors if e.startswith("parser error")], result.errors  # a safety net, unused
    assert all(isinstance(m, Mention) and m.text.strip() and m.label in LABELS for m in result.mentions)
    for fmt in FORMATS.values():
        assert pairs(fmt.parse(text, LABELS)) == pairs(result), fmt.name
    entities = [Entity(i, i + 1, m.label, m.text) for i, m in enumerate(result.mentions)]
    for fmt in FORMATS.values():
        if fmt.name == "compact" and not all(_one_line(m.text) for m in result.mentions):
            continue
        again = fmt.parse(fmt.render(entities, LABELS), LABELS)
        assert again.ok and pairs(again) == pairs(result), (fmt.name, again.errors)
    if not any(c in text for c in "\\'“”：，｛｝"):  # JSON escapes, Python literals, full-width repairs
        assert all(m.text in text for m in result.mentions), pairs(result)


@FAST
@given(st.text())
@example("{" * 300)
@example('{"entity_text": "' + "\\" * 50)
@example("```" * 10)
@example('前言\n地点:北京\n{"entity_text": "张三", "entity_label": "人名"} 组织：新华社')
def test_parse_reads_any_text_canonically(text):
    check_reading(text)


def render_pieces():
    """Structured garbage: fragments of real answers, cut and glued at random."""
    entity = st.tuples(any_mention, label_codes)
    fragments = st.one_of(
        st.builds(lambda es, f: FORMATS[f].render([Entity(0, 1, lab, t) for t, lab in es], LABELS),
                  st.lists(entity, max_size=3), st.sampled_from(list(FORMATS))),
        st.sampled_from(['{', '}', '"', '“', '”', ':', '：', ",", "\n", "```json", "```", "[", "]", "\\",
                         '"entity_text"', '"entity_label"', "地点", "没有找到任何实体", "｛", "｝"]),
        st.text(alphabet=CHINESE, max_size=8),
    )
    return st.lists(fragments, max_size=12).map("".join).flatmap(
        lambda s: st.integers(0, len(s)).map(lambda k: s[:k]) | st.just(s)
    )


@FAST
@given(render_pieces())
def test_parse_reads_structured_garbage_canonically(text):
    check_reading(text)


@FAST
@given(st.lists(st.tuples(any_mention, label_codes), max_size=6), st.sampled_from(["tutorial", "jsonl"]))
def test_json_formats_round_trip_any_mention(items, name):
    fmt = FORMATS[name]
    entities = [Entity(i, i + 1, label, text) for i, (text, label) in enumerate(items)]
    result = fmt.parse(fmt.render(entities, LABELS), LABELS)
    assert result.ok, result.errors
    assert pairs(result) == [(t, lab) for t, lab in items]


@FAST
@given(st.lists(st.tuples(line_mention, label_codes), max_size=6))
def test_compact_round_trips_single_line_mentions(items):
    fmt = FORMATS["compact"]
    entities = [Entity(i, i + 1, label, text) for i, (text, label) in enumerate(items)]
    result = fmt.parse(fmt.render(entities, LABELS), LABELS)
    assert result.ok, result.errors
    assert pairs(result) == [(t, lab) for t, lab in items]


@FAST
@given(st.lists(st.tuples(any_mention, label_codes), min_size=1, max_size=5), st.data())
def test_truncated_json_answers_keep_every_complete_entity(items, data):
    """Cut a tutorial/jsonl answer anywhere: every object that is wholly before the cut is recovered, in order."""
    name = data.draw(st.sampled_from(["tutorial", "jsonl"]))
    fmt = FORMATS[name]
    rendered = [fmt.render([Entity(0, 1, lab, t)], LABELS) for t, lab in items]
    answer = fmt.render([Entity(i, i + 1, lab, t) for i, (t, lab) in enumerate(items)], LABELS)
    cut = data.draw(st.integers(0, len(answer)))
    result = fmt.parse(answer[:cut], LABELS)
    sep = 1 if name == "jsonl" else 0
    complete, pos = 0, 0
    for piece in rendered:
        pos += len(piece)
        if pos > cut:
            break
        complete += 1
        pos += sep
    # The cut object may also be read back when only its closing brace is missing.
    assert pairs(result)[:complete] == [(t, lab) for t, lab in items[:complete]]
    assert len(result.mentions) <= complete + 1
    if len(result.mentions) == complete + 1:
        assert pairs(result)[complete] == items[complete]


def test_parse_time_stays_linear_on_adversarial_answers():
    good = '{"entity_text": "南京", "entity_label": "地理实体"}'
    started = time.perf_counter()
    for answer in ("{" * 20_000, '{"a{' * 5_000, "{“" * 10_000, '{"entity_text": "南\n' * 2_000 + good):
        parse(answer)
    assert time.perf_counter() - started < 3.0  # rescanning from every "{" took tens of seconds
    assert pairs(parse('{"entity_text": "南\n' * 2_000 + good)) == [("南京", "GPE")]
