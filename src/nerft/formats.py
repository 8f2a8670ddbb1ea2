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
around the answer), returns every entity it could read and lists the rest in ``errors`` (the reader is
``answer_reader.parse_answer``, one for every format).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .answer_reader import NONE_ANSWERS, TUTORIAL_NONE, Mention, ParseResult, parse_answer
from .labels import LabelSet
from .schema import Entity, NerftError

__all__ = ["NONE_ANSWERS", "TUTORIAL_NONE", "Mention", "ParseResult", "parse_answer", "OutputFormat", "FORMATS",
           "register_format", "get_format", "UnknownFormatError"]


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
        units: list[str] = []
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

    def none_start_ids(self, tokenizer: Any, stop_ids: Sequence[int]) -> list[int]:
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
