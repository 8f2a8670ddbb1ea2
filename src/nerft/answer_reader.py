"""The one reader of model answers, for every output format: ``parse_answer(text, labels)`` is total (it never
raises) and returns the mentions it could read and the pieces it could not. ``formats`` builds each format's
``parse`` on it; the types it returns (``Mention``, ``ParseResult``) and the "no entity" answers live here so that
both modules share them without importing each other.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from .labels import LabelSet

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
