"""The error report ``nerft evaluate`` writes beside report.md (report.html): one self-contained file with the
scores (P/R/F1 per label under the strict, boundary and partial rules), the confusion matrix, and every document
with an error, gold and predicted entities marked in its text, filterable by error kind and label. The tables are
written here; the documents travel as data (only those with an error) and the page's script
(``assets/report.js``) shows them a page at a time, so a report of thousands of documents opens at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..labels import LabelSet
from ..metrics import ERROR_KINDS, entity_errors
from ..schema import Document, Entity
from .bundle import build_page
from .marks import escape

KIND_NAMES = {"missed": "missed", "spurious": "spurious", "wrong_label": "wrong label",
              "wrong_boundary": "wrong boundary"}


def error_documents(gold: Sequence[Document], preds: Sequence[Sequence[Entity]]) -> list[dict[str, Any]]:
    """The documents with an error, as the page reads them: ``{"id", "text", "gold": [[start, end, label]],
    "pred": [[start, end, label, score, text]], "errors": [[kind, gold index, pred index]]}`` (index -1: none).
    A prediction without offsets is a spurious error listed apart from the text."""
    out = []
    for doc, predicted in zip(gold, preds, strict=True):
        gold_spans = sorted({(e.start, e.end, e.label) for e in doc.entities
                             if e.start is not None and e.end is not None})
        placed = [e for e in predicted if e.start is not None and e.end is not None]
        pred_spans = sorted({(e.start, e.end, e.label) for e in predicted
                             if e.start is not None and e.end is not None})
        score = {(e.start, e.end, e.label): e.score for e in placed}
        errors = [[err.kind, gold_spans.index(err.gold) if err.gold else -1,
                   pred_spans.index(err.pred) if err.pred else -1] for err in entity_errors(gold_spans, pred_spans)]
        pred_rows: list[list[Any]] = [[s, e, label, score[(s, e, label)], doc.text[s:e]] for s, e, label in pred_spans]
        for e in predicted:
            if e.start is None or e.end is None:
                errors.append(["spurious", -1, len(pred_rows)])
                pred_rows.append([None, None, e.label, e.score, e.text])
        if errors:
            out.append({"id": doc.id, "text": doc.text, "gold": [list(s) for s in gold_spans], "pred": pred_rows,
                        "errors": errors})
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _scores_table(metrics: dict[str, Any], labels: LabelSet) -> str:
    rules = ("strict", "boundary", "partial")
    head = "".join(f'<th colspan="3">{rule}</th>' for rule in rules)
    sub = "<th>P</th><th>R</th><th>F1</th>" * len(rules)
    rows = [f"<table><thead><tr><th></th>{head}<th></th><th></th></tr>"
            f"<tr><th>label</th>{sub}<th>gold</th><th>predicted</th></tr></thead><tbody>"]
    for code, strict in metrics["strict"]["per_label"].items():
        cells = ""
        for rule in rules:
            m = metrics[rule].get("per_label", {}).get(code) if rule != "strict" else strict
            cells += ("".join(f"<td>{_pct(m[k])}</td>" for k in ("precision", "recall", "f1")) if m
                      else "<td></td>" * 3)
        name = labels.name_of(code)
        shown = escape(name) + (f' <span class="muted">{escape(code)}</span>' if name != code else "")
        rows.append(f'<tr><td><span class="swatch {_colour(labels, code)}"></span> {shown} '
                    f'<meter min="0" max="1" value="{strict["f1"]:.4f}" title="strict F1"></meter></td>'
                    f"{cells}<td>{strict['support']}</td><td>{strict['predicted']}</td></tr>")
    micro = "".join(f"<td>{_pct(metrics[rule]['micro'][k])}</td>" for rule in rules
                    for k in ("precision", "recall", "f1"))
    total = metrics["strict"]["micro"]
    rows.append(f'<tr class="total"><td>micro</td>{micro}<td>{total["tp"] + total["fn"]}</td>'
                f'<td>{total["tp"] + total["fp"]}</td></tr>')
    macro = metrics["strict"]["macro"]
    rows.append('<tr class="total"><td>macro (strict)</td>' + "".join(
        f"<td>{_pct(macro[k])}</td>" for k in ("precision", "recall", "f1")) + "<td></td>" * 8 + "</tr>")
    return "".join(rows) + "</tbody></table>"


def _colour(labels: LabelSet, code: str) -> str:
    codes = labels.codes
    return f"c{(codes.index(code) if code in codes else len(codes)) % 12}"


def _confusion_table(metrics: dict[str, Any], kinds: dict[str, Counter[str]], labels: LabelSet) -> str:
    confusion = metrics["confusion"]
    codes = [c for c in metrics["strict"]["per_label"]]
    codes += sorted({x for g, row in confusion.items() for x in (g, *row)} - set(codes))
    peak = max([n for row in confusion.values() for n in row.values()]
               + [n for kind in ("missed", "spurious") for n in kinds[kind].values()] + [1])

    def cell(n: int, diagonal: bool) -> str:
        heat = 0 if not n else 1 + min(4, int(4 * n / peak))
        return f'<td class="{"diag " if diagonal else ""}h{heat}">{n or ""}</td>'

    head = "".join(f"<th>{escape(labels.name_of(c))}</th>" for c in codes)
    rows = [f'<table class="confusion"><thead><tr><th>gold \\ predicted</th>{head}<th>(none): missed</th></tr>'
            "</thead><tbody>"]
    for g in codes:
        row = confusion.get(g, {})
        rows.append(f"<tr><th>{escape(labels.name_of(g))}</th>" + "".join(cell(row.get(p, 0), p == g) for p in codes)
                    + cell(kinds["missed"][g], False) + "</tr>")
    rows.append("<tr><th>(none): spurious</th>" + "".join(cell(kinds["spurious"][p], False) for p in codes)
                + "<td></td></tr>")
    return "".join(rows) + "</tbody></table>"


def report_page(gold: Sequence[Document], preds: Sequence[Sequence[Entity]], metrics: dict[str, Any],
                labels: LabelSet, sources: dict[str, str]) -> str:
    """The HTML of the report. ``sources``: what was scored (shown as given: ``{"gold": path, "predictions": ...}``)."""
    docs = error_documents(gold, preds)
    kinds: dict[str, Counter[str]] = {k: Counter() for k in ERROR_KINDS}
    for d in docs:
        for kind, gi, pi in d["errors"]:
            kinds[kind][(d["gold"][gi] if gi >= 0 else d["pred"][pi])[2]] += 1
    micro = metrics["strict"]["micro"]
    facts = [f"{metrics['documents']} documents", f"{metrics['documents_with_errors']} with an error",
             f"strict F1 {_pct(micro['f1'])} (P {_pct(micro['precision'])}, R {_pct(micro['recall'])})",
             f"exact documents {_pct(metrics['exact_match'])}%",
             *(f"{k.replace('_', ' ')} {metrics[k]}" for k in ("parse_failures", "hallucinations", "duplicates")
               if metrics.get(k))]
    counted = ", ".join(f"{KIND_NAMES[k]} {sum(kinds[k].values())}" for k in ERROR_KINDS)
    body = f"""<header class="top"><h1>nerft evaluate</h1>
<div class="sub">{" · ".join(f"{escape(k)} <b>{escape(v)}</b>" for k, v in sources.items())}</div></header>
<main>
<section class="card"><h2>Scores</h2><p class="muted">{escape(" · ".join(facts))}</p>
<div class="scroll-x">{_scores_table(metrics, labels)}</div>
<p class="muted">strict: same span and label; boundary: same span, any label; partial: overlapping spans with the
same label. Percent.</p></section>
<section class="card"><h2>Confusion</h2><p class="muted">Spans whose boundaries match (rows: gold, columns:
predicted); gold entities nothing found in the last column, predictions on no gold entity in the last row
(wrong-boundary pairs are in neither).</p><div class="scroll-x">{_confusion_table(metrics, kinds, labels)}</div>
</section>
<section class="card" id="errors"><h2>Documents with an error</h2><p class="muted">{escape(counted)}</p>
<div class="row" id="kind-filter" aria-label="error kinds"></div>
<div class="row filters"><label>label <select id="label-filter"></select></label>
<input type="search" id="search" placeholder="find in id or text" aria-label="find in id or text">
<span class="muted" id="doc-count" role="status"></span></div>
<div id="docs"></div>
<div class="row pager"><button id="prev">← previous</button><span id="page"></span><button id="next">next →</button>
</div></section></main>"""
    data = {"labels": [[c, labels.name_of(c)] for c in labels.codes], "kinds": KIND_NAMES, "docs": docs}
    return build_page(title="nerft evaluate", body=body, styles=("base.css", "report.css"),
                      scripts=("marks.js", "report.js"), data=data).html
