"""Output formats: what the model is trained to write, as a pair ``render(entities)`` / ``parse(text)``.

- ``tutorial``: the Qwen2-NER tutorial's target, concatenated ``{"entity_text": ..., "entity_label": ...}``
  objects (no separator), or 没有找到任何实体 when there is none.
- ``jsonl``: one such JSON object a line; nothing at all when there is none.
- ``compact``: one ``标签:实体`` line per entity; nothing when there is none. Fewest generated tokens.

Entities are rendered in text order, so grounding can place a mention that occurs several times.
``parse`` is total: it never raises. It reads any of the three formats (and mixtures, code fences, full-width
punctuation, truncated JSON, prose around the answer), returns every entity it could read and lists the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .labels import LabelSet
from .schema import Entity

TUTORIAL_NONE = "没有找到任何实体"
# Ways models say "nothing found"; an answer made only of these is an empty (and well-formed) answer.
NONE_ANSWERS = {"", "无", "none", "无实体", "没有", "[]", "{}", TUTORIAL_NONE, "没有实体", "未找到实体", "未找到任何实体"}


@dataclass(frozen=True)
class Mention:
    """What the model wrote: a surface string and a label code. Not yet placed in the text."""

    text: str
    label: str


@dataclass
class ParseResult:
    mentions: list[Mention] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # pieces of the answer that could not be read

    @property
    def ok(self) -> bool:
        return not self.errors


class OutputFormat:
    name: str = ""
    none_text: str = ""

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        raise NotImplementedError

    def instruction(self, labels: LabelSet) -> str:
        """The sentence of the system prompt that describes this format."""
        raise NotImplementedError

    def parse(self, text: str, labels: LabelSet) -> ParseResult:
        return parse_answer(text, labels)


def _ordered(entities: Iterable[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e.start if e.start is not None else 1 << 30, e.end or 0, e.label))


class TutorialFormat(OutputFormat):
    name = "tutorial"
    none_text = TUTORIAL_NONE

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        # The tutorial builds these with an f-string (no escaping); json.dumps gives the same bytes for plain
        # mentions and stays valid JSON for mentions with quotes or backslashes.
        out = "".join(
            f'{{"entity_text": {json.dumps(e.text, ensure_ascii=False)}, '
            f'"entity_label": {json.dumps(labels.name_of(e.label), ensure_ascii=False)}}}'
            for e in _ordered(entities)
        )
        return out or self.none_text

    def instruction(self, labels: LabelSet) -> str:
        return f'以 json 格式输出，如 {{"entity_text": "南京", "entity_label": "{labels.names[0]}"}}；没有实体时输出"{TUTORIAL_NONE}"。'


class JsonlFormat(OutputFormat):
    name = "jsonl"

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        return "\n".join(
            json.dumps({"entity_text": e.text, "entity_label": labels.name_of(e.label)}, ensure_ascii=False)
            for e in _ordered(entities)
        )

    def instruction(self, labels: LabelSet) -> str:
        return '每个实体一行 json：{"entity_text": 实体, "entity_label": 类型}；没有实体时不输出。'


class CompactFormat(OutputFormat):
    name = "compact"

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        return "\n".join(f"{labels.name_of(e.label)}:{e.text}" for e in _ordered(entities))

    def instruction(self, labels: LabelSet) -> str:
        return "按原文顺序每行输出“类型:实体”，没有实体时不输出。"


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (TutorialFormat(), JsonlFormat(), CompactFormat())}


def get_format(name: str) -> OutputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; choose one of {', '.join(FORMATS)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Parsing

_FENCE = re.compile(r"```[a-zA-Z]*")
# Full-width structural punctuation that models sometimes emit inside JSON.
_JSON_REPAIR = str.maketrans({"｛": "{", "｝": "}", "“": '"', "”": '"', "：": ":", "，": ","})
_TEXT_KEYS = ("entity_text", "text", "entity", "mention", "name", "实体")
_LABEL_KEYS = ("entity_label", "label", "type", "entity_type", "类型", "标签")
_LINE = re.compile(r"^\s*(?:[-*•]\s*|\d+[.)、]\s*)?(?P<label>[^:：\n]{1,40}?)\s*[:：]\s*(?P<mention>.+?)\s*$")


def _json_objects(text: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]]]:
    """Spans of balanced {...} groups (respecting strings), and spans of unterminated ones (truncated output)."""
    found, broken = [], []
    i, n = 0, len(text)
    while i < n:
        if text[i] not in "{｛":
            i += 1
            continue
        depth, j, in_str, esc = 0, i, False, False
        while j < n:
            c = text[j]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c in '"”':
                    in_str = False
            elif c in '"“':
                in_str = True
            elif c in "{｛":
                depth += 1
            elif c in "}｝":
                depth -= 1
                if depth == 0:
                    break
            elif c == "\n" and depth == 1 and j > i and text[j - 1] not in ",，{｛":
                # a line break inside an unclosed object that does not continue it: the object was cut off
                break
            j += 1
        if j < n and text[j] in "}｝" and depth == 0:
            found.append((i, j + 1, text[i : j + 1]))
            i = j + 1
        else:
            broken.append((i, j))
            i = j if j > i else i + 1
    return found, broken


def _mention_from_obj(obj: object, labels: LabelSet) -> tuple[Mention | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"not an entity object: {obj!r}"[:120]
    mention = next((obj[k] for k in _TEXT_KEYS if isinstance(obj.get(k), str)), None)
    written = next((obj[k] for k in _LABEL_KEYS if isinstance(obj.get(k), str)), None)
    if mention is None or written is None:
        return None, f"entity object without text or label: {json.dumps(obj, ensure_ascii=False)}"[:120]
    code = labels.to_code(written)
    if code is None:
        return None, f"unknown label {written!r} for {mention!r}"
    if not mention.strip():
        return None, f"empty mention for label {written!r}"
    return Mention(mention.strip(), code), None


def _parse_json_piece(piece: str) -> object:
    for candidate in (piece, piece.translate(_JSON_REPAIR)):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError


def parse_answer(text: str, labels: LabelSet) -> ParseResult:
    """Read entity mentions from a model's answer in any nerft format. Never raises."""
    result = ParseResult()
    try:
        _parse_into(text if isinstance(text, str) else str(text), labels, result)
    except Exception as exc:  # defensive: parse must be total
        result.errors.append(f"parser error: {type(exc).__name__}: {exc}")
    return result


def _parse_into(text: str, labels: LabelSet, result: ParseResult) -> None:
    body = _FENCE.sub("\n", text).strip()
    if body.lower() in NONE_ANSWERS:
        return
    found: list[tuple[int, Mention]] = []  # (position in the answer, mention): mixed formats keep their order
    objects, broken = _json_objects(body)
    for start, _end, piece in objects:
        try:
            obj = _parse_json_piece(piece)
        except ValueError:
            result.errors.append(f"invalid JSON: {piece[:80]}")
            continue
        for item in obj if isinstance(obj, list) else [obj]:
            mention, error = _mention_from_obj(item, labels)
            if mention:
                found.append((start, mention))
            elif error:
                result.errors.append(error)
    for start, end in broken:
        result.errors.append(f"unterminated JSON: {body[start:end][:80]}")
    # The text outside the JSON pieces is read line by line (compact lines, or prose around the answer).
    gaps, last = [], 0
    for start, end in sorted([(s, e) for s, e, _ in objects] + broken):
        gaps.append((last, body[last:start]))
        last = max(last, end)
    gaps.append((last, body[last:]))
    for offset, gap in gaps:
        for line_match in re.finditer(r"[^\n]+", gap):
            line = line_match.group().strip().strip("[],，")
            if not line or line.lower() in NONE_ANSWERS:
                continue
            m = _LINE.match(line)
            code = labels.to_code(m.group("label")) if m else None
            if m and code is not None:
                found.append((offset + line_match.start(), Mention(m.group("mention").strip(), code)))
            elif m:
                result.errors.append(f"unknown label {m.group('label').strip()!r} for {m.group('mention')!r}")
            else:
                result.errors.append(f"unreadable line: {line[:80]}")
    result.mentions.extend(m for _, m in sorted(found, key=lambda pair: pair[0]))
