"""Documents with very many entities: scoring and the marks layout against their size (issue 43.7).

    python -m benchmarks.many_entities                       # 1,000 / 15,000 / 30,000 entities in one document
    python -m benchmarks.many_entities --sizes 30000 --no-js

One synthetic document of N entities (two-character mentions with a character between them, alternating labels),
predicted with every third mention shifted by one character (a wrong boundary) and every fifth relabelled:
``nerft.metrics.score_documents`` (strict, boundary, partial, the error list), ``pages.marks.pieces`` (the
report's and the serve page's layout in Python) and ``marks.js``'s ``pieces`` in Node.js (what the pages run in
the browser), each timed once after a warm-up on a small document. Before the sweep these grew with N^2 (15,000
entities: 43 s in evaluate; 30,000: 44 s per render of the report).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import REPO, log, markdown_table, write_results

MARKS_JS = REPO / "src" / "nerft" / "pages" / "assets" / "marks.js"


def document(n: int):
    from nerft.schema import Document, Entity

    text = "".join("北京，" for _ in range(n))
    gold = [Entity(3 * k, 3 * k + 2, "GPE" if k % 2 else "LOC", "北京") for k in range(n)]
    pred = []
    for k, e in enumerate(gold):
        start = e.start + (1 if k % 3 == 0 else 0)
        pred.append(Entity(start, start + 2, "ORG" if k % 5 == 0 else e.label, text[start:start + 2]))
    return Document("big", text, gold), Document("big", text, pred)


def time_python(n: int) -> dict:
    from nerft.metrics import score_documents
    from nerft.pages.marks import Span, pieces

    gold, pred = document(n)
    start = time.perf_counter()
    scores = score_documents([gold], [pred])
    score_s = time.perf_counter() - start
    spans = [Span(e.start, e.end, e.label) for e in gold.entities + pred.entities]
    start = time.perf_counter()
    cut = pieces(gold.text, spans)
    pieces_s = time.perf_counter() - start
    return {"entities": n, "score_s": round(score_s, 3), "strict_f1": round(scores["strict"]["micro"]["f1"], 4),
            "pieces_py_s": round(pieces_s, 3), "pieces": len(cut)}


def time_js(n: int) -> float | None:
    node = shutil.which("node")
    if node is None:
        return None
    gold, pred = document(n)
    spans = [{"start": e.start, "end": e.end, "label": e.label} for e in gold.entities + pred.entities]
    script = (MARKS_JS.read_text(encoding="utf-8") + "\nconst data = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "\nNerftMarks.pieces('北京', [{start: 0, end: 2, label: 'x'}]);"
              "\nconst t = process.hrtime.bigint(); const out = NerftMarks.pieces(data.text, data.spans);"
              "\nconsole.log(JSON.stringify({s: Number(process.hrtime.bigint() - t) / 1e9, n: out.length}));")
    done = subprocess.run([node, "-e", script], input=json.dumps({"text": gold.text, "spans": spans}),
                          capture_output=True, text=True, check=True)
    return round(json.loads(done.stdout)["s"], 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,15000,30000")
    parser.add_argument("--no-js", action="store_true", help="skip the Node.js timing of marks.js")
    parser.add_argument("--out-name", default="many_entities")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    time_python(50)  # warm-up: imports, first calls
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        row = time_python(n)
        row["pieces_js_s"] = None if args.no_js else time_js(n)
        log(f"{n} entities: {row}")
        rows.append(row)
    md = ("## One document, many entities: scoring and the marks layout\n\n"
          + markdown_table(rows, ["entities", "score_s", "pieces_py_s", "pieces_js_s", "pieces", "strict_f1"])
          + "\n\nscore_s: `metrics.score_documents` (strict, boundary, partial, the error list); pieces_py_s / "
            "pieces_js_s: the marks layout in Python and in Node.js (marks.js, what the pages run).")
    write_results(args.out_name, {"benchmark": "many_entities", "rows": rows}, md, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
