"""Corpus prediction: ``--input`` (.txt, one text a line, or .jsonl with ``text`` and optional ``id``) into
``--output`` JSONL, in input order, resumable.

The documents are predicted longest first (chunks of one length batch with little padding: 1.05x the documents/s
of input order on 320 CCFBDCI texts, ``benchmarks/predict_order``) and the file is put back in input order when
the last one is in.

Each output row is ``{"id", "text", "entities"}`` (+ ``output``, the raw answer, with ``raw``), appended and
synced a chunk at a time. Run again on the same input and output, it skips the documents already written. It
refuses to resume onto an output written for another input (a row's text differs from the input's text for its
id) or with other settings (``OUTPUT.resume.json``, written beside it before its first row, records the model,
backend, labels and decoding options), to write into a file it did not write (no such record: a gold split with
the same ids is never appended to), into a FIFO or device, and over its own input.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import atomic_write, write_json
from ..jsonl import JsonlAppender, cut_torn_tail, iter_jsonl
from ..progress import progress as progress_of
from ..schema import InputError, NerftError
from ..textio import iter_lines, require_file, require_output_file, unfinished_tail

if TYPE_CHECKING:  # base imports torch; reading and writing files does not need it
    from ..inference.base import Prediction, Predictor

logger = logging.getLogger("nerft.predict")


def read_inputs(path: str | Path, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """(id, text) pairs from a .txt file (one text a line, id = line number) or a .jsonl file (text, optional id).
    ``encoding``: a codec name or ``auto`` (see :mod:`nerft.textio`); bad bytes name the line and byte offset.
    A last line without its line end is not a document yet (a file still being written): it is left out, with a
    warning, and read once it is complete."""
    path = require_file(path, "input file")
    if path.suffix == ".jsonl":
        rows = list(iter_jsonl(path, encoding=encoding, tolerant=True))
    else:
        rows = [(n, line) for n, line in iter_lines(path, encoding) if line.strip()]
    if rows and unfinished_tail(path):
        logger.warning("%s, line %d: no line end yet, so not a document yet (a file still being written?); it is "
                       "read once it ends with a newline", path, rows[-1][0])
        rows.pop()
    out = []
    for k, (lineno, obj) in enumerate(rows):
        if isinstance(obj, InputError):
            raise obj
        if path.suffix != ".jsonl":
            out.append((str(lineno), obj))
        elif not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(path, lineno, "expected an object with a string field 'text'")
        else:
            out.append((str(obj.get("id", k)), obj["text"]))
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise NerftError(f"{path}: document ids are not unique; resuming needs unique ids")
    return out


def stamp_file(output: Path) -> Path:
    """Where predict records what it writes ``output`` with: ``OUTPUT.resume.json`` beside it."""
    return output.with_name(output.name + ".resume.json")


def check_stamp(output: Path, stamp: dict[str, Any] | None) -> None:
    """Refuse to add to ``output`` unless predict wrote it with the same settings (``stamp``: everything that
    changes an answer; None: only that predict wrote it). A missing or empty output gets the stamp written before
    its first row."""
    if not output.exists() or output.stat().st_size == 0:
        if stamp is not None:
            write_json(stamp_file(output), {"written_by": "nerft predict", **stamp})
        return
    try:
        recorded = json.loads(stamp_file(output).read_text("utf-8"))
    except (OSError, ValueError):
        raise NerftError(f"--output {output} is not a nerft prediction file (no readable {stamp_file(output).name} "
                         "beside it: nerft predict did not write it); refusing to write into it: pass a new file"
                         ) from None
    if not isinstance(recorded, dict) or recorded.pop("written_by", None) != "nerft predict":
        raise NerftError(f"--output {output}: {stamp_file(output).name} beside it is not nerft predict's; refusing "
                         "to write into it: pass a new file")
    if stamp is None:
        return
    stamp = json.loads(json.dumps(stamp))  # as it reads back (tuples as lists)
    changed = sorted(k for k in stamp.keys() | recorded.keys() if recorded.get(k) != stamp.get(k))
    if changed:
        shown = "; ".join(f"{k}: {recorded.get(k)!r} then, {stamp.get(k)!r} now" for k in changed[:4])
        raise NerftError(f"--output {output} was written with other settings ({shown}); resuming would mix their "
                         "answers: pass a new --output, or the same settings")


def finished_ids(output: Path, inputs: dict[str, str], stamp: dict[str, Any] | None = None) -> set[str]:
    """Ids already predicted into ``output``, after checking it is this input's prediction file, written by
    predict with the same settings (``stamp``). A torn last line (an interrupted write) is cut off the file."""
    check_stamp(output, stamp)
    if not output.is_file() or output.stat().st_size == 0:
        return set()
    try:  # checks every complete line before it cuts anything: a file nerft did not write is left as it is
        cut_torn_tail(output, row_start=b'{"id": ')
        rows = list(iter_jsonl(output))
    except (InputError, NerftError) as exc:
        problem = exc.problem if isinstance(exc, InputError) else str(exc).split("; ")[0]
        raise NerftError(f"--output {output} is not a nerft prediction file ({problem}); refusing to write "
                         "into it: pass a new file") from None
    done: set[str] = set()
    for lineno, row in rows:
        if not (isinstance(row, dict) and {"id", "text", "entities"} <= row.keys()):
            raise NerftError(f"--output {output}, line {lineno}: not a nerft prediction row; refusing to write into "
                             "a file nerft did not create: pass a new file")
        doc_id = str(row["id"])
        if inputs.get(doc_id) != row["text"]:
            raise NerftError(f"--output {output}, line {lineno}: the prediction for id {doc_id!r} was made for "
                             "another text than this input's; it belongs to another input: pass a new --output")
        done.add(doc_id)
    return done


def prediction_row(doc_id: str, text: str, prediction: Prediction, raw: bool = False) -> dict[str, Any]:
    """One output row: ``{"id", "text", "entities"}``, plus ``output`` (the raw answer) with ``raw``."""
    row: dict[str, Any] = {"id": doc_id, "text": text, "entities": [e.to_dict() for e in prediction.entities]}
    if raw:
        row["output"] = "\n".join(prediction.answers)
    return row


def predict_file(predictor: Predictor, input_path: str | Path, output_path: str | Path, *, chunk_size: int = 32,
                 labels: list[str] | None = None, raw: bool = False, progress: bool | None = None,
                 encoding: str = "utf-8", stamp: dict[str, Any] | None = None, longest_first: bool = True) -> int:
    """Predict every document of ``input_path`` (read in ``encoding``) into ``output_path``, resuming a previous
    run made with the same ``stamp`` (the settings that change answers; ``labels`` and ``raw`` are added to it);
    returns the number of documents predicted now. ``progress``: a bar (True), none (False) or as the command
    chose (None, :mod:`nerft.progress`). ``longest_first``: predict the documents longest first, then put the file
    in input order (False: in input order, chunk by chunk, as before; ``benchmarks/predict_order`` compares the
    two)."""
    input_path, output_path = Path(input_path), require_output_file(output_path)
    if output_path.exists() and input_path.resolve() == output_path.resolve():
        raise NerftError(f"--output {output_path} is the input file; pass another file")
    docs = read_inputs(input_path, encoding)
    done = finished_ids(output_path, dict(docs), {**(stamp or {}), "labels": labels, "raw": raw})
    todo = [(i, t) for i, t in docs if i not in done]
    if longest_first:  # each chunk's batches then hold texts of one length: little padding, no short text kept
        todo.sort(key=lambda row: -len(row[1]))  # waiting on a long answer; input order comes back at the end
    with progress_of(len(docs), "predict", unit="doc", initial=len(docs) - len(todo), show=progress) as bar, \
            JsonlAppender(output_path, durable=True) as out:
        for k in range(0, len(todo), chunk_size):
            chunk = todo[k: k + chunk_size]
            results = predictor.predict_detailed([t for _, t in chunk], labels)
            out.write_many([prediction_row(i, t, p, raw) for (i, t), p in zip(chunk, results, strict=True)])
            bar.update(len(chunk))
    put_in_input_order(output_path, [i for i, _ in docs])
    return len(todo)


def put_in_input_order(output: Path, ids: list[str]) -> None:
    """Rewrite a finished prediction file (one row for each of ``ids``) in the order of ``ids``, atomically; a file
    already in that order is left untouched. An interrupted run leaves its rows in the order predicted (resuming
    reads ids, not positions) until the run that finishes it."""
    with open(output, "rb") as f:
        lines = [line for line in f if line.strip()]
    found = [str(json.loads(line)["id"]) for line in lines]
    if found == ids:
        return
    by_id = dict(zip(found, lines, strict=True))
    with atomic_write(output, "wb") as f:
        f.writelines(by_id[i] for i in ids)
