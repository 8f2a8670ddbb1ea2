"""Output formats: what the model is trained to write, as a pair ``render(entities)`` / ``parse(text)``.

- ``tutorial``: the Qwen2-NER tutorial's target, concatenated ``{"entity_text": ..., "entity_label": ...}``
  objects (no separator), or 没有找到任何实体 when there is none. Byte-identical to the tutorial's f-string for
  mentions without ``"`` or ``\\``; those are escaped here (the tutorial writes invalid JSON; both parse).
- ``jsonl``: one such JSON object a line; nothing at all when there is none.
- ``compact``: one ``标签:实体`` line per entity; nothing when there is none. Fewest generated tokens (5.5 a
  CCFBDCI document against 16.4 for ``tutorial``; experiments/format_tokens.py). A line break inside a mention
  is written as a space (grounding finds the original span again).

Entities are rendered in text order (start, then end), so grounding can place a mention that occurs several
times. ``parse`` is total: it never raises. It reads any of the three formats (and mixtures, code fences,
full-width punctuation, truncated or slightly invalid JSON, Python dict reprs, ``{label: [mentions]}``, prose
around the answer), returns every entity it could read and lists the rest in ``errors``.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .labels import LabelSet
from .schema import Entity, NerftError

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
    json_units: int = 0  # entity pieces read from JSON objects
    line_units: int = 0  # entity pieces read from "标签:实体" lines

    @property
    def ok(self) -> bool:
        return not self.errors


class OutputFormat:
    """One answer format. Everything nerft knows of a format is here: how it renders and reads entities, how an
    answer splits into entity units, where a cut answer's last complete unit ends, its grammar for constrained
    decoding and how its "no entity" answer begins. A new format is a subclass passed to ``register_format``.

    The grammar: an answer is ``none_text``, or units joined by ``separator``, each unit the ``head + mention +
    tail`` of one label (``unit_affixes``), the mention a piece of the input holding none of ``forbidden``. The
    empty answer is valid when ``none_text`` is empty. A tail must begin with an ASCII character of ``forbidden``;
    without a separator, units end at ``unit_end``, which ends every tail and is in ``forbidden``.

    The defaults for units (``units``, ``may_end_unit``, ``written_units``) read what ``parse_answer`` reads,
    ``标签:实体`` lines and JSON objects; a format with another syntax overrides them with ``parse``.
    """

    name: str = ""
    none_text: str = ""
    json_syntax: bool = True  # whether the format writes JSON objects (else "标签:实体" lines)
    separator: str = "\n"  # written between two units
    unit_end: str = ""  # what closes every unit ("": a unit is known to be complete once the separator follows)
    forbidden: str = ""  # characters a mention may not hold in constrained decoding

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        raise NotImplementedError

    def instruction(self, labels: LabelSet) -> str:
        """The sentence of the system prompt that describes this format."""
        raise NotImplementedError

    def unit_affixes(self, label_names: Sequence[str]) -> list[tuple[str, str]]:
        """(head, tail) around the mention of a unit, for each label name: the grammar constrained decoding uses."""
        raise NerftError(f"the {self.name} format has no grammar for constrained decoding")

    def parse(self, text: str, labels: LabelSet) -> ParseResult:
        """Every entity the total parser can read, with each piece written in another format's syntax counted
        as an error: the entities are kept, ``ok`` says whether the model kept to the format it was taught."""
        result = parse_answer(text, labels)
        off = result.line_units if self.json_syntax else result.json_units
        if off:
            other = "标签:实体 line" if self.json_syntax else "JSON object"
            result.errors.append(f"{off} entity piece(s) written as a {other}, not in the {self.name} format")
        return result

    def split(self, answer: bytes) -> tuple[list[bytes], bytes]:
        """The grammar's closed units of ``answer`` (UTF-8 bytes: a token may end inside a character) and the
        rest, the unit being written: at each separator, or after each ``unit_end`` for a format without one."""
        if self.separator:
            *units, rest = answer.split(self.separator.encode())
            return units, rest
        end, units, rest = self.unit_end.encode(), [], answer
        while (k := rest.find(end)) >= 0:
            units.append(rest[: k + len(end)])
            rest = rest[k + len(end):]
        return units, rest

    def complete_prefix(self, answer: str) -> str:
        """The answer up to its last complete unit: what a constrained answer cut at its token bound keeps."""
        if self.unit_end:
            return answer[: answer.rfind(self.unit_end) + len(self.unit_end)]
        return answer[: max(answer.rfind(self.separator), 0)]

    def units(self, answer: str) -> list[str]:
        """The entity units of an answer (each scored on its own): lines, and the ``{...}`` objects of a line
        that holds several."""
        units = []
        for line in answer.split("\n"):
            if line.count("}") > 1:
                units.extend(piece + "}" for piece in line.split("}") if piece.strip())
            elif line.strip():
                units.append(line)
        return units

    def may_end_unit(self, piece: str) -> bool:
        """Whether writing ``piece`` (one token's text) may have completed a unit."""
        return "\n" in piece or "}" in piece

    def written_units(self, answer: str, piece: str) -> list[str]:
        """The units of an answer being written, just after ``piece`` was written, less the one it began."""
        if "\n" in piece:
            answer = answer[: answer.rfind("\n")]
        return self.units(answer)

    def none_start_ids(self, tokenizer, stop_ids: Sequence[int]) -> list[int]:
        """Tokens that begin a "no entity" answer: an immediate end of turn (``stop_ids``), or the first token
        of ``none_text``."""
        ids = list(stop_ids)
        if self.none_text:
            ids.append(tokenizer.encode(self.none_text, add_special_tokens=False)[0])
        return ids


_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _ordered(entities: Iterable[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e.start if e.start is not None else 1 << 30, e.end or 0, e.label))


# Characters a mention may not hold in the JSON formats' grammar: they would need escaping (or end the object).
_JSON_UNSAFE = '"\\{}' + "".join(map(chr, range(32)))


class _JsonObjects(OutputFormat):
    """The JSON formats' units: ``{"entity_text": "<mention>", "entity_label": "<label>"}``."""

    unit_end = "}"
    forbidden = _JSON_UNSAFE

    def unit_affixes(self, label_names: Sequence[str]) -> list[tuple[str, str]]:
        return [('{"entity_text": "', f'", "entity_label": {json.dumps(name, ensure_ascii=False)}}}')
                for name in label_names]


class TutorialFormat(_JsonObjects):
    name = "tutorial"
    none_text = TUTORIAL_NONE
    separator = ""

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


class JsonlFormat(_JsonObjects):
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
    json_syntax = False

    def render(self, entities: Iterable[Entity], labels: LabelSet) -> str:
        # A line break inside a mention would split its line; a space stands in for it and grounding, which
        # ignores white space when the exact string is not in the text, finds the original span again.
        return "\n".join(f"{labels.name_of(e.label)}:{_LINE_BREAKS.sub(' ', e.text)}" for e in _ordered(entities))

    def instruction(self, labels: LabelSet) -> str:
        return "按原文顺序每行输出“类型:实体”，没有实体时不输出。"

    def unit_affixes(self, label_names: Sequence[str]) -> list[tuple[str, str]]:
        return [(f"{name}:", "") for name in label_names]


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (TutorialFormat(), JsonlFormat(), CompactFormat())}


class UnknownFormatError(NerftError, ValueError):
    """An output format name nerft does not know (a ValueError too, for callers that catch that)."""


def register_format(fmt: OutputFormat) -> OutputFormat:
    """Make ``fmt`` known by its name to every stage (prompts, training targets, reading, constrained decoding)."""
    if not fmt.name or fmt.name in FORMATS:
        raise ValueError(f"an output format needs a name not yet taken, not {fmt.name!r}")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> OutputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormatError(f"unknown output format {name!r}; choose one of {', '.join(FORMATS)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Parsing
#
# One reader for every format, so a model that drifts between formats (or wraps its answer in prose or a code
# fence) loses only what it garbled. The answer is scanned left to right: a ``{`` starts a JSON object (an entity,
# or ``{"entities": [...]}``, or ``{label: [mentions]}``); anything else is read one line at a time as a
# ``标签:实体`` line. What cannot be read is reported in ``errors`` and scanning resumes at the next line or ``{``,
# so one broken piece never hides the well-formed entities after it.

_FENCE = re.compile(r"^[ \t]*```[A-Za-z0-9_-]*[ \t]*$", re.M)  # a fence line; ``` inside a mention stays
_OPEN, _CLOSE = "{｛", "}｝"
# Full-width structural punctuation that models sometimes emit inside JSON.
_JSON_REPAIR = str.maketrans({"｛": "{", "｝": "}", "“": '"', "”": '"', "：": ":", "，": ","})
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_TEXT_KEYS = ("entity_text", "text", "entity", "mention", "name", "实体")
_LABEL_KEYS = ("entity_label", "label", "type", "entity_type", "类型", "标签")
# The tutorial builds its target with an f-string, so a mention holding a double quote comes out as invalid JSON
# (``{"entity_text": "他说"好"", ...}``); this reads that shape back with the greedy match ending at the last quote.
_UNESCAPED = re.compile(
    r'^\{\s*"entity_text"\s*:\s*"(?P<mention>.*)"\s*,\s*"entity_label"\s*:\s*"(?P<label>[^"]*)"\s*\}$', re.S
)
_LINE = re.compile(r"^(?:[-*•]\s*|\d{1,3}[.)、]\s*)?(?P<label>[^:：\n]{1,40}?)\s*[:：]\s*(?P<mention>.+?)\s*$")
_SEPARATORS = " \t\r\n[],，;；、"
_FAILED = object()


class _ObjectEnds:
    """Where each balanced ``{...}`` of an answer ends, respecting strings; None when it is cut off.

    A raw line break inside a string ends the object as broken: JSON strings cannot hold one, and it is what a
    truncated object followed by the next line looks like. Every ``{`` met outside a string on the way is
    resolved too (its scan would be the same from there), so retrying after a broken object rarely rescans;
    a budget of scanned characters keeps adversarial answers (``{“{“{“...``) linear: past it, objects not yet
    resolved count as broken.
    """

    def __init__(self, text: str):
        self.text = text
        self.ends: dict[int, int | None] = {}
        self.budget = 32 * len(text) + 4096

    def __call__(self, i: int) -> int | None:
        if i in self.ends:
            return self.ends[i]
        text, opened = self.text, []
        quote, escaped, j = "", False, i
        for j in range(i, min(len(text), i + max(self.budget, 0))):
            c = text[j]
            if quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == "\n":
                    break
                elif c == '"' or (quote == "“" and c == "”"):
                    quote = ""
            elif c in '"“':
                quote = c
            elif c in _OPEN:
                opened.append(j)
            elif c in _CLOSE:
                self.ends[opened.pop()] = j + 1
                if not opened:
                    self.budget -= j + 1 - i
                    return j + 1
        self.budget -= j + 1 - i
        for k in opened:
            self.ends[k] = None
        return None


def _load_object(piece: str) -> object:
    """The JSON value of ``piece`` after light repairs, or _FAILED."""
    repaired = _TRAILING_COMMA.sub(r"\1", piece.translate(_JSON_REPAIR))
    for candidate in (piece, _TRAILING_COMMA.sub(r"\1", piece), repaired):
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, RecursionError):
            continue
    for candidate in (piece, repaired):
        m = _UNESCAPED.match(candidate)
        if m:
            return {"entity_text": m.group("mention"), "entity_label": m.group("label")}
    for candidate in (piece, repaired):  # a Python dict repr: {'entity_text': '南京', ...}
        try:
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return _FAILED


def _clip(piece: str, limit: int = 80) -> str:
    piece = piece.strip()
    return piece if len(piece) <= limit else piece[:limit] + "…"


def _mentions_from_value(value: object, labels: LabelSet, found: list[Mention], errors: list[str]) -> None:
    """Entities from a parsed JSON value: an entity object, a list of them, {"entities": [...]}, {label: [...]}."""
    if isinstance(value, list):
        for item in value:
            _mentions_from_value(item, labels, found, errors)
        return
    if not isinstance(value, dict):
        errors.append(f"not an entity object: {_clip(repr(value))}")
        return
    if isinstance(value.get("entities"), list) and len(value) == 1:
        _mentions_from_value(value["entities"], labels, found, errors)
        return
    mention = next((value[k] for k in _TEXT_KEYS if isinstance(value.get(k), str)), None)
    written = next((value[k] for k in _LABEL_KEYS if isinstance(value.get(k), str)), None)
    if mention is None and written is None and value and all(labels.to_code(str(k)) for k in value):
        for key, items in value.items():  # {"地点": ["北京", "上海"], "人名": "张三"}
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, str) and item.strip():
                    found.append(Mention(item, labels.to_code(str(key))))  # type: ignore[arg-type]
                else:
                    errors.append(f"not a mention for label {key!r}: {_clip(repr(item))}")
        return
    if mention is None or written is None:
        errors.append(f"entity object without text or label: {_clip(json.dumps(value, ensure_ascii=False))}")
        return
    code = labels.to_code(written)
    if code is None:
        errors.append(f"unknown label {written!r} for {mention!r}")
    elif not mention.strip():
        errors.append(f"empty mention for label {written!r}")
    else:
        found.append(Mention(mention, code))


def _read_line(line: str, labels: LabelSet, found: list[Mention], errors: list[str]) -> None:
    m = _LINE.match(line)
    code = labels.to_code(m.group("label")) if m else None
    if m and code is not None:
        found.append(Mention(m.group("mention"), code))
    elif m:
        errors.append(f"unknown label {m.group('label').strip()!r} for {m.group('mention')!r}")
    else:
        errors.append(f"unreadable line: {_clip(line)}")


def parse_answer(text: str, labels: LabelSet) -> ParseResult:
    """Read entity mentions from a model's answer in any nerft format. Never raises."""
    result = ParseResult()
    try:
        _parse_into(text if isinstance(text, str) else str(text), labels, result)
    except Exception as exc:  # defensive: parse must be total
        result.errors.append(f"parser error: {type(exc).__name__}: {exc}")
    return result


def _is_none_answer(piece: str) -> bool:
    return piece.strip().strip("。.!！\"'“”").lower() in NONE_ANSWERS


def _parse_into(text: str, labels: LabelSet, result: ParseResult) -> None:
    body = _FENCE.sub("\n", text)
    if _is_none_answer(body):
        return
    found, errors = result.mentions, result.errors
    object_end = _ObjectEnds(body)
    i, n = 0, len(body)
    while i < n:
        if body[i] in _SEPARATORS:
            i += 1
            continue
        eol = body.find("\n", i)
        eol = n if eol == -1 else eol
        if body[i] in _OPEN:
            end = object_end(i)
            value = _load_object(body[i:end]) if end is not None else _FAILED
            if value is not _FAILED:
                result.json_units += 1
                _mentions_from_value(value, labels, found, errors)
                i = end  # type: ignore[assignment]
                continue
            # Broken: report it and resume at the next "{" or line, whichever comes first.
            stop = min([eol] + [k for k in (body.find("{", i + 1), body.find("｛", i + 1)) if k != -1])
            if end is None and stop == eol:
                # Cut off after its last field (a generation limit): the fields written are whole, keep them.
                value = _load_object(body[i:stop].rstrip().rstrip(",，") + "}")
                closed: list[Mention] = []
                if isinstance(value, dict):
                    _mentions_from_value(value, labels, closed, [])
                if closed:
                    result.json_units += 1
                    errors.append(f"unterminated JSON, read as closed: {_clip(body[i:stop])}")
                    found.extend(closed)
                    i = stop
                    continue
            what = "unterminated JSON" if end is None else "invalid JSON"
            errors.append(f"{what}: {_clip(body[i:stop])}")
            i = stop
            continue
        line = body[i:eol].rstrip()
        m = _LINE.match(line)
        if m and labels.to_code(m.group("label")) is not None:
            result.line_units += 1
            _read_line(line, labels, found, errors)
            i = eol
            continue
        brace = min([k for k in (line.find("{"), line.find("｛")) if k != -1], default=-1)
        if brace > 0:  # prose before a JSON object on the same line
            prose = line[:brace].strip(_SEPARATORS)
            if prose and not _is_none_answer(prose):
                errors.append(f"unreadable text: {_clip(prose)}")
            i += brace
            continue
        if not _is_none_answer(line.strip(_SEPARATORS)):
            _read_line(line.strip(), labels, found, errors)
        i = eol
