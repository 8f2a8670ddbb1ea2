"""``nerft predict --output-format html``: a sample of a predicted corpus with its entities marked, for a quick
look in a browser. Static (no script runs in it): the marks are written here (``marks.marked_html``), a mark's
label, offsets and score show on hover (its title)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..labels import LabelSet
from .bundle import build_page
from .marks import Span, colour_classes, escape, marked_html, placeable

SAMPLE_DOCUMENTS = 200  # documents shown; the whole corpus stays in the nerft JSONL beside the page


def sample(rows: Sequence[Any], size: int = SAMPLE_DOCUMENTS) -> list[Any]:
    """``size`` rows spread evenly over ``rows`` (all of them when there are no more), in their order."""
    if len(rows) <= size:
        return list(rows)
    return [rows[k * len(rows) // size] for k in range(size)]


def corpus_page(rows: Sequence[dict[str, Any]], labels: LabelSet, title: str, source: str = "") -> str:
    """The page for nerft prediction rows (``{"id", "text", "entities"}``): a legend with each label's count over
    all rows, then the sample's documents."""
    shown = sample(rows)
    colour = colour_classes(labels.codes)
    counts = Counter(e["label"] for row in rows for e in row["entities"])
    legend = " ".join(f'<span class="chip"><span class="swatch {colour(code)}"></span>{escape(labels.name_of(code))}'
                      f' <span class="n">{counts[code]}</span></span>'
                      for code in [*labels.codes, *sorted(set(counts) - set(labels.codes))])
    docs = []
    for row in shown:
        spans = [Span(e.get("start"), e.get("end"), e["label"], e.get("score")) for e in row["entities"]]
        lost = [e for e, s in zip(row["entities"], spans, strict=True) if not placeable(s, len(row["text"]))]
        note = ("" if not lost else '<div class="muted">not in the text: '
                + escape(", ".join(f"{e['text']} ({labels.name_of(e['label'])})" for e in lost)) + "</div>")
        docs.append(f'<div class="result"><div class="muted">id {escape(str(row["id"]))} · {len(row["entities"])} '
                    f'entities</div><div class="doc">{marked_html(row["text"], spans, colour, labels.name_of)}'
                    f"</div>{note}</div>")
    kept = (f"{len(shown)} of {len(rows)} documents, spread evenly over the file" if len(shown) < len(rows)
            else f"{len(rows)} documents")
    body = (f'<header class="top"><h1>{escape(title)}</h1><div class="sub">{escape(source)} · {kept} · '
            f'{sum(counts.values())} entities in all</div></header><main><section class="card">'
            f'<div class="row">{legend}</div></section><section class="card">{"".join(docs)}</section></main>')
    return build_page(title=title, body=body, styles=("base.css", "corpus.css")).html
