"""Label Studio exports: the JSON export (a JSON array of tasks) and JSON-MIN.

JSON (``Export > JSON`` or the export API): ``[{"id", "data": {"text": ...}, "annotations": [{"result": [...],
"was_cancelled", "ground_truth", ...}], "predictions": [...]}]``. Each ``result`` item of ``"type": "labels"`` is
an entity: ``value.start``/``value.end`` (character offsets, ``end`` exclusive), ``value.text`` and
``value.labels`` (a region with several labels gives one entity per label). Results of other types (choices,
text areas, relations, labels on HTML) are not entities of a ``<Text>`` and are ignored, and counted.

Which annotation of a task: the one marked ``ground_truth``, else the first one that was not cancelled (skipped),
in the order of the task's list, which is the order Label Studio created them in. A task the annotator skipped
(all its annotations ``was_cancelled``) is never training data, whatever predictions it carries: it is skipped and
counted. A task with no annotation at all is skipped and counted too, because an unlabelled task is not a text
without entities; with ``use_predictions`` (``prepare --use-predictions``) it is read from its first prediction
instead, when the export holds predictions in full: unreviewed model output taken as gold, so it is opt-in, and
the report counts those tasks and names their ids. Label Studio's quick export (``GET /api/projects/ID/export``)
lists predictions by id only; a snapshot export (``POST /api/projects/ID/exports`` with
``serialization_options.predictions.only_id: false``) has them in full.

JSON-MIN: one flat object per annotation: the task's data fields, ``id`` (the task id), one list per labels
control (``"label": [{"start", "end", "text", "labels"}]``) and ``annotator``, ``annotation_id``, ``created_at``,
``updated_at``, ``lead_time``. A record with ``"annotation_id": null`` is an unlabelled task and is skipped; when
a task has several annotations (several records with one ``id``), the first record is kept (Label Studio writes
the newest first) and the others are counted. JSON-MIN writes the task id over the task data's own ``id`` (its
converter copies the data, then sets ``id``), so a document id given in ``data.id`` cannot be recovered from it:
the documents get task ids, and the report says so (export JSON to keep ``data.id``).

Text: ``data.text`` when it is a string, else the one string field that every region's ``value.text`` matches (a
labelling config with ``<Text value="$sentence">`` keeps the text under another key). Offsets are Python
character (code point) offsets, as Label Studio writes them today; an export whose offsets count UTF-16 units (a
text with emoji, from versions that counted so) is recognised when ``value.text`` matches that reading, and the
offsets are converted.

Document ids: ``data.id`` when the task data has one (nerft's pre-annotations put the document id there), else
the task id, else ``<file stem>-<index>``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..schema import Document, Entity, InputError
from .base import ReadReport, collect, id_prefix, require_int

# JSON-MIN keys that are not task data (the rest are the task's data fields and the labels controls).
JSON_MIN_META = ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "history")
_TASK_KEYS = ("annotations", "completions", "predictions")


def read_label_studio(path: str | os.PathLike, *, encoding: str = "utf-8", use_predictions: bool = False,
                      **options: Any) -> tuple[list[Document], ReadReport]:
    """A Label Studio JSON or JSON-MIN export (one JSON array of tasks) as Documents. ``use_predictions``: read a
    task without annotations from its first prediction (unreviewed; counted and named in the report)."""
    path = Path(path)
    prefix = id_prefix(path)
    tally: Counter[str] = Counter()
    seen_min_ids: set[str] = set()
    from_predictions: list[str] = []

    def records() -> Iterator[tuple[int, Document | InputError]]:
        for index, (line, task) in enumerate(iter_array_items(path, encoding)):
            if isinstance(task, InputError):
                yield line, task
                continue
            before = tally["from_predictions"]
            try:
                doc = document_from_task(task, str(path), line, f"{prefix}-{index}", tally, seen_min_ids,
                                         use_predictions)
            except InputError as exc:
                yield line, exc
                continue
            if doc is not None:
                if tally["from_predictions"] > before:
                    from_predictions.append(doc.id)
                yield line, doc

    docs, report = collect(path, "label-studio", records(), **options)
    for message in _tally_messages(tally):
        report.warn(f"{path}: {message}")
    if from_predictions:
        shown = ", ".join(from_predictions[:10]) + (", ..." if len(from_predictions) > 10 else "")
        report.warn(f"{path}: --use-predictions: {len(from_predictions)} document(s) are unreviewed model "
                    f"predictions read as gold: {shown}")
    return docs, report


def iter_array_items(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """(line where it starts, item) for each item of the JSON array that is the whole file; a syntax error is
    yielded as an InputError and ends the walk (nothing after it can be placed)."""
    try:
        text = path.read_text(encoding=encoding).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        yield 1, InputError(path, None, f"not valid {encoding} at byte {exc.start} ({exc.reason})")
        return
    decoder = json.JSONDecoder()
    pos = _skip(text, 0, " \t\r\n")
    if not text.startswith("[", pos):
        yield 1, InputError(path, 1, "a Label Studio export is one JSON array of tasks; this file does not start "
                                     "with '['")
        return
    line = 1 + text.count("\n", 0, pos)
    pos += 1
    while True:
        start = _skip(text, pos, " \t\r\n,")
        line += text.count("\n", pos, start)
        pos = start
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield exc.lineno, InputError(path, exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")
            return
        yield line, item
        line += text.count("\n", pos, end)
        pos = end


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def is_label_studio_record(record: Any) -> bool:
    """Whether a parsed JSON record is a Label Studio task (JSON export) or a JSON-MIN record."""
    if not isinstance(record, dict):
        return False
    if isinstance(record.get("data"), dict) and any(key in record for key in _TASK_KEYS):
        return True
    return "annotation_id" in record and "annotator" in record


def document_from_task(task: Any, path: str, line: int, default_id: str, tally: Counter[str],
                       seen_min_ids: set[str], use_predictions: bool = False) -> Document | None:
    """One task (or JSON-MIN record) as a Document; None for a task that has no labels to read (counted)."""
    if not isinstance(task, dict):
        raise InputError(path, line, f"expected a task object, got {type(task).__name__}")
    if isinstance(task.get("data"), dict):
        fields = task["data"]
        result = _chosen_result(task, path, line, tally, use_predictions)
        if result is None:
            return None
        regions = _label_regions(result, path, line, tally)
    else:  # JSON-MIN
        if task.get("annotation_id", "") is None:
            tally["unlabelled"] += 1
            return None
        task_id = str(task.get("id"))
        if "id" in task and task_id in seen_min_ids:
            tally["later_annotations"] += 1
            return None
        seen_min_ids.add(task_id)
        tally["json_min_ids"] = 1
        fields = {k: v for k, v in task.items() if k not in JSON_MIN_META}
        regions = [v for values in fields.values() if _is_region_list(values) for v in values]
        fields = {k: v for k, v in fields.items() if not _is_region_list(v)}
    text_key = _text_key(fields, regions, path, line)
    text = fields[text_key]
    entities = [entity for value in regions for entity in _entities_of(value, text, path, line, tally)]
    doc_id = fields.get("id") if "data" in task else None
    if doc_id is None:
        doc_id = task.get("id", default_id)
    return Document(str(doc_id), text, entities)


def _chosen_result(task: dict[str, Any], path: str, line: int, tally: Counter[str],
                   use_predictions: bool = False) -> list[Any] | None:
    annotations = task.get("annotations", task.get("completions")) or []
    if not isinstance(annotations, list):
        raise InputError(path, line, "'annotations' must be a list")
    usable = [a for a in annotations
              if isinstance(a, dict) and not a.get("was_cancelled") and not a.get("skipped")]
    chosen = next((a for a in usable if a.get("ground_truth")), usable[0] if usable else None)
    if len(usable) > 1:
        tally["several_annotations"] += 1
    if chosen is None and annotations:  # skipped by the annotator: never training data, predictions or not
        tally["cancelled"] += 1
        return None
    if chosen is None:
        predictions = task.get("predictions") or []
        full = [p for p in predictions if isinstance(p, dict)] if isinstance(predictions, list) else []
        if full and use_predictions:
            tally["from_predictions"] += 1
            chosen = full[0]
        else:
            tally["unreviewed" if full else "predictions_by_id" if predictions else "unlabelled"] += 1
            return None
    result = chosen.get("result") or []
    if not isinstance(result, list):
        raise InputError(path, line, "an annotation's 'result' must be a list")
    return result


def _label_regions(result: list[Any], path: str, line: int, tally: Counter[str]) -> list[dict[str, Any]]:
    regions = []
    for item in result:
        if not isinstance(item, dict):
            raise InputError(path, line, f"a result item must be an object, got {type(item).__name__}")
        kind = item.get("type")
        if kind != "labels":
            tally[f"ignored:{kind}"] += 1
            continue
        if not isinstance(item.get("value"), dict):
            raise InputError(path, line, f"result {item.get('id')!r} has no 'value' object")
        regions.append(item["value"])
    return regions


def _is_region_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, dict) and "start" in v and "end" in v and "labels" in v for v in value)


def _text_key(fields: dict[str, Any], regions: list[dict[str, Any]], path: str, line: int) -> str:
    if isinstance(fields.get("text"), str):
        return "text"
    strings = [key for key, value in fields.items() if isinstance(value, str)]
    matching = [key for key in strings
                if all(_placed(fields[key], r.get("start"), r.get("end"), r.get("text")) for r in regions)]
    if len(matching) == 1:
        return matching[0]
    if not strings:
        raise InputError(path, line, "the task data has no text (no 'text' field and no other string field)")
    raise InputError(path, line, f"cannot tell which task data field holds the text ({', '.join(strings)}); "
                                 "rename it to 'text'")


def _entities_of(value: dict[str, Any], text: str, path: str, line: int, tally: Counter[str]) -> list[Entity]:
    start = require_int(value.get("start"), "value.start", path, line)
    end = require_int(value.get("end"), "value.end", path, line)
    labels = value.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise InputError(path, line, f"region [{start}, {end}) needs 'labels', a non-empty list of strings")
    mention = value.get("text")
    placed = _placed(text, start, end, mention)
    if placed is None:  # validation names the mismatch
        return [Entity(start, end, label, str(mention)) for label in labels]
    if placed != (start, end):
        tally["utf16_offsets"] += 1
    start, end = placed
    return [Entity(start, end, label, text[start:end]) for label in labels]


def _placed(text: str, start: Any, end: Any, mention: Any) -> tuple[int, int] | None:
    """(start, end) in code points: as given when ``mention`` (if any) is there, else read as UTF-16 offsets when
    that reading finds it; None when neither does."""
    if not isinstance(start, int) or not isinstance(end, int):
        return None
    if mention is None or text[start:end] == mention:
        return start, end
    starts = utf16_to_code_points(text)
    if 0 <= start < end < len(starts):
        a, b = starts[start], starts[end]
        if a is not None and b is not None and text[a:b] == mention:
            return a, b
    return None


def utf16_to_code_points(text: str) -> list[int | None]:
    """For each UTF-16 offset of ``text`` (0..length, inclusive), the code point offset that starts there; None
    in the middle of a surrogate pair."""
    out: list[int | None] = []
    for k, char in enumerate(text):
        out.append(k)
        if ord(char) > 0xFFFF:
            out.append(None)
    out.append(len(text))
    return out


def _tally_messages(tally: Counter[str]) -> list[str]:
    texts = {
        "unlabelled": "{n} task(s) without annotations were skipped",
        "cancelled": "{n} task(s) the annotator skipped (was_cancelled) were left out, whatever their predictions",
        "unreviewed": "{n} task(s) with predictions but no annotation were skipped: nobody reviewed them (pass "
                      "--use-predictions to read unreviewed predictions as gold)",
        "predictions_by_id": "{n} task(s) without annotations list predictions by id only and were skipped "
                             "(unreviewed; with --use-predictions, a snapshot export with full predictions is read)",
        "json_min_ids": "JSON-MIN puts Label Studio's task id in place of the task data's id: the documents have "
                        "task ids (export JSON to keep data.id)",
        "several_annotations": "{n} task(s) have several annotations; the ground-truth one, else the first, was read",
        "later_annotations": "{n} JSON-MIN record(s) repeat a task id (another annotation of the task); the first "
                             "was kept",
        "utf16_offsets": "{n} region(s) had UTF-16 offsets (text with emoji); converted to character offsets",
    }
    out = [texts[key].format(n=n) for key, n in tally.items() if key in texts]
    ignored = {key.split(":", 1)[1]: n for key, n in tally.items() if key.startswith("ignored:")}
    if ignored:
        listed = ", ".join(f"{kind} ({n})" for kind, n in sorted(ignored.items()))
        out.append(f"result items that are not text labels were ignored: {listed}")
    return out
