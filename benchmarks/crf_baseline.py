"""The classic baseline: a character CRF (python-crfsuite) with BIO tags, trained on nerft JSONL.

    pip install python-crfsuite                                    # benchmark-only (pip install -e .[bench])
    python -m benchmarks.crf_baseline                              # full train split + K = 100, 400, 1600
    python -m benchmarks.crf_baseline --ks 400 --results /tmp/x    # one size

Features, tags, training and tagging are nerft's own character CRF (``nerft.crf``, the one ``nerft distill``
trains); this script trains it on the first K documents and scores it. Training: L-BFGS, ``--iterations`` (100),
c1 0.1, c2 0.01, every transition allowed. Decoding: Viterbi, then BIO to spans (an ``I-X`` that does not
continue an ``X`` opens a new entity). Scored by ``nerft evaluate`` on the
whole seeded test split. Training data: the seeded-shuffled train split (``scoring.shuffled_train``), its
first K documents, so the K rows are the same documents the learning curve gives the LLM recipes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nerft import crf
from nerft.crf import char_features, char_type, require_crfsuite  # noqa: F401 (the benchmark's names)
from nerft.schema import NerftError

from .common import (
    RESULTS,
    WORK,
    labels_beside,
    log,
    markdown_table,
    nerft_evaluate,
    prepare_ccfbdci,
    read_jsonl,
    strict_row,
)

DEFAULT_KS = (100, 400, 1600, 0)  # 0: the whole train split


def _require_crfsuite():
    try:
        return require_crfsuite()
    except NerftError as exc:
        raise SystemExit(f"the CRF baseline: {exc} (or pip install -e .[bench])") from None


def bio_tags(text: str, entities: list[dict[str, Any]]) -> list[str]:
    """``nerft.crf.bio_tags`` over entity dicts."""
    return crf.bio_tags(len(text), [(e["start"], e["end"], e["label"]) for e in entities])


def spans_from_bio(text: str, tags: list[str]) -> list[dict[str, Any]]:
    """Entity dicts (start, end, label, text) from BIO tags (``nerft.crf.spans_from_bio``)."""
    return [{"start": s, "end": e, "label": lab, "text": text[s:e]} for s, e, lab in crf.spans_from_bio(tags)]


# ---------------------------------------------------------------------------------------------------------------
# Train, predict, score


def train_crf(train_file: str | Path, model_file: str | Path, limit: int | None = None, iterations: int = 100,
              c1: float = 0.1, c2: float = 0.01) -> dict[str, Any]:
    """Train ``nerft.crf`` on the first ``limit`` documents of ``train_file``; returns timings."""
    from nerft.jsonl import read_documents

    _require_crfsuite()
    docs = read_documents(train_file)[:limit] if limit else read_documents(train_file)
    report = crf.train_crf(docs, model_file, iterations, c1, c2)
    return {"train_docs": len(docs), "train_s": report["train_s"]}


def tag_spans(tagger, text: str) -> list[dict[str, Any]]:
    """The Viterbi entities of ``text`` from an open ``pycrfsuite.Tagger``, each with its ``nerft.crf`` score."""
    if not text:
        return []
    tags = tagger.tag(char_features(text))
    spans = spans_from_bio(text, tags)
    for e in spans:
        e["score"] = round(min(tagger.marginal(tags[i], i) for i in range(e["start"], e["end"])), 4)
    return spans


def predict_crf(model_file: str | Path, test_file: str | Path, out_file: str | Path) -> dict[str, Any]:
    """Predictions JSONL (id, text, entities with their ``tag_spans`` score) for every document of ``test_file``."""
    from nerft.jsonl import write_jsonl

    pycrfsuite = _require_crfsuite()
    tagger = pycrfsuite.Tagger()
    tagger.open(str(model_file))
    start = time.perf_counter()
    rows = []
    for d in read_jsonl(test_file):
        rows.append({"id": d["id"], "text": d["text"], "entities": tag_spans(tagger, d["text"])})
    write_jsonl(out_file, rows)
    return {"score_s": round(time.perf_counter() - start, 2)}


def score_row(gold: Path, pred: Path, out_dir: Path, labels: str) -> dict[str, Any]:
    """Strict micro P/R/F1 and per-label F1 (percent) from ``nerft evaluate``."""
    return strict_row(nerft_evaluate(gold, pred, out_dir, labels=labels)["strict"])


def crf_row(train_file: str | Path, test_file: str | Path, work: Path, k: int | None, labels: str,
            iterations: int = 100) -> dict[str, Any]:
    """Train on the first ``k`` documents (None: all), score on ``test_file``: one result row."""
    name = f"k{k}" if k else "all"
    model_file, pred = work / f"crf-{name}.crfsuite", work / f"pred-crf-{name}.jsonl"
    row: dict[str, Any] = {"row": "crf", "k": k or len(read_jsonl(train_file))}
    row.update(train_crf(train_file, model_file, k, iterations))
    row.update(predict_crf(model_file, test_file, pred))
    row.update(score_row(Path(test_file), pred, work / f"eval-crf-{name}", labels))
    log(f"crf K={row['k']}: strict F1 {row['f1']:.2f} (train {row['train_s']:.0f} s)")
    return row


def main(argv: list[str] | None = None) -> int:
    from .common import write_results
    from .scoring import shuffled_train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="nerft prepare output (default: ../shared CCFBDCI, seed 42)")
    parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)),
                        help="training sizes: first K documents of the seeded shuffle (0: all)")
    parser.add_argument("--iterations", type=int, default=100, help="L-BFGS iterations")
    parser.add_argument("--out-name", default="crf_baseline")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)

    _require_crfsuite()
    data_dir = Path(args.data_dir) if args.data_dir else prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci")
    work = Path(args.work) / "crf"
    work.mkdir(parents=True, exist_ok=True)
    train_file = shuffled_train(data_dir / "train.jsonl", work / "train.shuffled.jsonl")
    test_file = data_dir / "test.jsonl"
    labels = labels_beside(test_file)
    rows = [crf_row(train_file, test_file, work, int(k) or None, labels, args.iterations)
            for k in args.ks.split(",") if k.strip()]
    cols = ["row", "k", "train_s", "score_s", "precision", "recall", "f1",
            *sorted({c for r in rows for c in r if c.startswith("f1_")})]
    n_test = len(read_jsonl(test_file))
    md = (f"## Character CRF baseline (python-crfsuite, L-BFGS {args.iterations} iterations; strict micro P/R/F1 "
          f"on the {n_test} documents of the seeded test split, `nerft evaluate`)\n\n" + markdown_table(rows, cols)
          + "\n\nk: the first K documents of the seeded-shuffled train split. Features: char unigrams and bigrams "
          "in a +-2 window, the centre trigram, char types of c[-1..+1], BOS/EOS (benchmarks/crf_baseline.py). "
          "train_s: crfsuite on one core.")
    write_results(args.out_name, {"benchmark": "CRF baseline", "iterations": args.iterations, "test_docs": n_test,
                                  "train_file": str(train_file), "rows": rows}, md, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
