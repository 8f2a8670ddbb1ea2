"""Prediction files for annotation tools: ``nerft predict --input F --output O --output-format FORMAT``.

``nerft`` (default)
    O is nerft's prediction JSONL (``files.predict_file``): written a chunk at a time, resumable.
``label-studio``
    O is a JSON array of Label Studio tasks carrying the entities as pre-annotations, to import into a project
    whose labelling config is written beside it as ``<O stem>.label_config.xml``::

        {"data": {"text": ..., "id": ...},
         "predictions": [{"model_version": ..., "score": ..., "result": [
             {"id", "from_name": "label", "to_name": "text", "type": "labels",
              "value": {"start", "end", "text", "labels": [code]}, "score"}]}]}

    ``score`` of a region is the entity's confidence; the prediction's ``score`` is the lowest of them (Label
    Studio's "prediction score" ordering then puts the least certain texts first), absent when no entity has a
    score. Labels are the label codes, the ``<Label value>`` of the config, so that an export read back by
    ``nerft prepare`` has the model's codes.
``doccano``
    O is JSONL in doccano's sequence-labelling import layout: ``{"id", "text", "label": [[start, end, code]]}``.
``spacy``
    O is a spaCy DocBin (``.spacy``, ``pip install 'nerft[spacy]'``), the corpus ``spacy train`` reads: one Doc a
    document, one token a character (so every entity lies on token boundaries whatever the language;
    ``spacy train`` aligns them with its own tokenizer), ``doc.ents`` the entities without overlaps (the longest,
    then the first, as spaCy keeps), ``doc.spans["nerft"]`` all of them with ``span._.nerft_score``, the
    document id in ``doc.user_data["id"]``. ``nerft prepare --input-format spacy`` reads it back.
``html``
    O is one self-contained HTML page for a quick look in a browser: up to 200 documents spread evenly over the
    corpus, their entities marked in the label colours (label, offsets and score on hover), each label's count
    over the whole corpus (:mod:`nerft.pages.corpus`).

A JSON array or a page cannot grow a line at a time, so for the other formats prediction still goes to the resumable
nerft JSONL, kept beside O as ``<O stem>.nerft.jsonl`` (scores and all; ``nerft evaluate`` reads it), and once
every input document is in it O is written from it in one atomic write. An interrupted run resumes from that
file; O itself never exists half-written. Entities kept without offsets (``--keep-hallucinated``) cannot be
placed in a tool and are left out of O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from ..fileio import atomic_write, write_json
from ..jsonl import iter_jsonl, write_jsonl
from ..labels import LabelSet
from ..schema import InputError, NerftError

OUTPUT_FORMATS = ("nerft", "label-studio", "doccano", "spacy", "html")
FROM_NAME, TO_NAME = "label", "text"  # the names of the <Labels> and <Text> tags in the labelling config
# Label Studio's default label colours, cycled (its config editor picks the same kind of palette).
COLOURS = ("#FFA39E", "#D4380D", "#FFC069", "#AD8B00", "#D3F261", "#389E0D", "#5CDBD3", "#096DD9", "#ADC6FF",
           "#9254DE", "#F759AB", "#FFA940")


def working_file(output: str | Path, output_format: str) -> Path:
    """Where prediction writes its resumable nerft JSONL: O itself for ``nerft``, else ``<O stem>.nerft.jsonl``."""
    output = Path(output)
    if output_format not in OUTPUT_FORMATS:
        raise NerftError(f"unknown --output-format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    return output if output_format == "nerft" else output.with_name(f"{output.stem}.nerft.jsonl")


def config_file(output: str | Path) -> Path:
    return Path(output).with_name(f"{Path(output).stem}.label_config.xml")


def labeling_config(labels: LabelSet) -> str:
    """A Label Studio labelling config for NER over ``$text`` with one ``<Label>`` per label code (the display name,
    when it differs, as the label's hint)."""
    lines = ["<View>", f"  <Labels name={quoteattr(FROM_NAME)} toName={quoteattr(TO_NAME)}>"]
    for k, label in enumerate(labels.labels):
        hint = f" hint={quoteattr(label.name)}" if label.name != label.code else ""
        lines.append(f"    <Label value={quoteattr(label.code)} background={quoteattr(COLOURS[k % len(COLOURS)])}"
                     f"{hint}/>")
    lines += ["  </Labels>", f"  <Text name={quoteattr(TO_NAME)} value=\"$text\"/>", "</View>", ""]
    return "\n".join(lines)


def label_studio_task(row: dict[str, Any], model_version: str) -> dict[str, Any]:
    """One nerft prediction row as a Label Studio task with the entities as one prediction."""
    result, scores = [], []
    for k, e in enumerate(_placed(row)):
        region: dict[str, Any] = {
            "id": f"e{k}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "labels",
            "value": {"start": e["start"], "end": e["end"], "text": e["text"], "labels": [e["label"]]},
        }
        if e.get("score") is not None:
            region["score"] = e["score"]
            scores.append(e["score"])
        result.append(region)
    prediction: dict[str, Any] = {"model_version": model_version, "result": result}
    if scores:
        prediction["score"] = min(scores)
    return {"data": {"text": row["text"], "id": row["id"]}, "predictions": [prediction]}


def doccano_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "text": row["text"], "label": [[e["start"], e["end"], e["label"]] for e in _placed(row)]}


def write_docbin(output: Path, rows: list[dict[str, Any]]) -> None:
    """The prediction rows as a DocBin of character-token Docs (see ``spacy`` above), written atomically."""
    try:
        from spacy.tokens import Doc, DocBin, Span
        from spacy.util import filter_spans
        from spacy.vocab import Vocab
    except ImportError:
        raise NerftError("--output-format spacy needs spaCy: pip install 'nerft[spacy]'") from None
    from ..readers.spacy_docbin import ID_KEY, SCORE_EXTENSION, SPANS_KEY, score_extension

    score_extension()
    vocab, corpus = Vocab(), DocBin(store_user_data=True)
    for row in rows:
        text = row["text"]
        doc = Doc(vocab, words=list(text), spaces=[False] * len(text))
        spans = []
        for e in _placed(row):
            span = Span(doc, e["start"], e["end"], label=e["label"])
            span._.set(SCORE_EXTENSION, e.get("score"))
            spans.append(span)
        doc.spans[SPANS_KEY] = spans
        doc.ents = filter_spans(spans)
        doc.user_data[ID_KEY] = str(row["id"])
        corpus.add(doc)
    with atomic_write(output, "wb") as f:
        f.write(corpus.to_bytes())


def _placed(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in row["entities"] if e.get("start") is not None and e.get("end") is not None]


def write_tool_file(work: str | Path, output: str | Path, output_format: str, labels: LabelSet,
                    model_version: str) -> list[Path]:
    """Write O (and for Label Studio its labelling config) from the finished nerft JSONL ``work``; returns the
    files written."""
    rows = []
    for line, row in iter_jsonl(work):
        if not (isinstance(row, dict) and {"id", "text", "entities"} <= row.keys()):
            raise InputError(work, line, "not a nerft prediction row")
        rows.append(row)
    output = Path(output)
    if output_format == "doccano":
        write_jsonl(output, (doccano_row(r) for r in rows))
        return [output]
    if output_format == "label-studio":
        write_json(output, [label_studio_task(r, model_version) for r in rows])
        with atomic_write(config_file(output)) as f:
            f.write(labeling_config(labels))
        return [output, config_file(output)]
    if output_format == "spacy":
        write_docbin(output, rows)
        return [output]
    if output_format == "html":
        from ..pages.corpus import corpus_page

        with atomic_write(output) as f:
            f.write(corpus_page(rows, labels, f"nerft predict · {model_version}", str(work)))
        return [output]
    raise NerftError(f"no tool file for output format {output_format!r}")
