"""Would a CRF beside the LLM help? nerft's tuned answers and the character CRF's, combined, on the seeded split.

    python -m experiments.crf_hybrid                 # the 60-minute hints run of benchmarks/work/b3 (its nerft tune)
    python -m experiments.crf_hybrid --tune DIR --test-answers PRED.jsonl --out-name NAME

Nothing is trained but the CRF (``crf_baseline``, all of the train file; reused for the same file's bytes) and
nothing is generated: the inputs are a ``nerft tune`` folder (the model's dev answers, as answered, and the
``decoding.yaml`` chosen from them) and the same model's test answers (as answered, e.g. ``bench_accuracy``'s
``pred-*.jsonl``). Both are finished with nerft's own last step (``predict.base.finish_entities`` with the tuned
decoding: min-scores, then the lexicon), as ``nerft predict --config`` would.

The combination (``combine``): a (span, label) that both systems give is kept; one that only the CRF gives is kept
when its confidence (the lowest marginal of its characters' tags) reaches ``crf_min``, one that only nerft gives
when its score reaches ``model_min``; of overlapping survivors the agreed ones win, then the more confident. Both
thresholds are chosen on dev over a grid, and the choice is scored once on test, beside each system alone, their
union and intersection, and the union's recall (what a perfect chooser among the two could reach at most).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, WORK, log, markdown_table, read_jsonl, strict_row

from . import RESULTS

B3 = WORK / "b3"
HINTS60 = "nerft_hints6-60_(equal_time)"
NEVER = 1.01  # a threshold no confidence reaches: that system's own mentions are never kept alone
GRID = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, NEVER]


def combine(model: list, crf: list, crf_min: float, model_min: float) -> list:
    """Non-overlapping entities from ``model`` and ``crf`` (``nerft.schema.Entity`` lists of one text; a model
    mention without a score counts as sure), by the rule of the module docstring."""
    from nerft.schema import Entity

    found: dict[tuple, list] = {}
    for e in model:
        found.setdefault((e.start, e.end, e.label, e.text), [None, None])[0] = 1.0 if e.score is None else e.score
    for e in crf:
        found.setdefault((e.start, e.end, e.label, e.text), [None, None])[1] = e.score
    ranked = []
    for key, (m, c) in found.items():
        if m is not None and c is not None:
            ranked.append((2 + m + c, key))
        elif c is not None and c >= crf_min:
            ranked.append((c, key))
        elif m is not None and m >= model_min:
            ranked.append((m, key))
    kept: list[tuple] = []
    for _, key in sorted(ranked, key=lambda r: (-r[0], r[1][0], r[1][1])):
        if not any(key[0] < k[1] and k[0] < key[1] for k in kept):
            kept.append(key)
    return [Entity(s, e, label, text) for s, e, label, text in sorted(kept)]


def crf_entities(model_file: Path, texts: list[str]) -> list[list]:
    """The CRF's entities of each text, scored by ``crf_baseline.tag_spans``."""
    from benchmarks.crf_baseline import _require_crfsuite, tag_spans
    from nerft.schema import entity_from_dict

    tagger = _require_crfsuite().Tagger()
    tagger.open(str(model_file))
    return [[entity_from_dict(e) for e in tag_spans(tagger, t)] for t in texts]


def finished(answers: list[dict], texts: list[str], decoding: Path, codes: set[str]) -> list[list]:
    """The model's answers (rows with ``entities``, in the order of ``texts``) after the tuned decoding (the
    lexicon adds labels in ``codes`` only, as in ``nerft tune``)."""
    from nerft.config import build_config
    from nerft.inference.base import finish_entities
    from nerft.inference.options import PredictOptions
    from nerft.lexicon import Lexicon
    from nerft.schema import NerftError, entity_from_dict

    options = build_config(PredictOptions, {}, config_path=str(decoding))
    lexicon = Lexicon.load(options.lexicon) if options.lexicon else None
    if [a["text"] for a in answers] != texts:
        raise NerftError(f"the answers are not to the gold texts, in order ({len(answers)} against {len(texts)})")
    return [finish_entities(t, [entity_from_dict(e) for e in a["entities"] if e.get("start") is not None], options,
                            lexicon, codes) for a, t in zip(answers, texts, strict=True)]


def scores(gold: list, preds: list[list], labels) -> dict[str, float]:
    from nerft.metrics import score_documents

    return strict_row(score_documents(gold, preds, labels=labels)["strict"])


def union_recall(gold: list, *systems: list[list]) -> float:
    """The share of gold mentions that at least one system gives (label and offsets exact), in percent."""
    hit = total = 0
    for k, doc in enumerate(gold):
        given = {(e.start, e.end, e.label) for s in systems for e in s[k]}
        total += len(doc.entities)
        hit += sum((e.start, e.end, e.label) in given for e in doc.entities)
    return round(100 * hit / total, 2) if total else 0.0


def shown(path: str | Path) -> str:
    """``path`` as the results show it: relative to the repository when it is inside."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import labels_beside, write_results
    from benchmarks.crf_baseline import train_crf
    from nerft.labels import load_label_set
    from nerft.schema import document_from_dict

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", default=str(B3 / f"tune-{HINTS60}"), help="a nerft tune output folder")
    parser.add_argument("--dev", default=str(B3 / "gold-tune-dev.jsonl"), help="the dev gold nerft tune was given")
    parser.add_argument("--test-answers", default=str(B3 / f"pred-{HINTS60}.jsonl"),
                        help="the same model's test answers, as answered (no min-score, no lexicon)")
    parser.add_argument("--test", default=str(B3 / "gold.jsonl"), help="the test gold")
    parser.add_argument("--train", default=str(B3 / "train.shuffled.jsonl"), help="the CRF's training file")
    parser.add_argument("--iterations", type=int, default=100, help="the CRF's L-BFGS iterations")
    parser.add_argument("--out-name", default="crf_hybrid")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK / "crf_hybrid"))
    args = parser.parse_args(argv)

    work, tune = Path(args.work), Path(args.tune)
    work.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(Path(args.train).read_bytes()).hexdigest()[:12]  # another training file: another CRF
    crf_model = work / f"crf-{digest}-{args.iterations}.crfsuite"
    if not crf_model.is_file():
        log(f"training the CRF on {args.train}")
        train_crf(args.train, crf_model, iterations=args.iterations)
    labels = load_label_set(labels_beside(args.test))
    split: dict[str, dict[str, Any]] = {}
    for name, gold_file, answers in (("dev", args.dev, read_jsonl(tune / "dev-answers.jsonl")),
                                     ("test", args.test, read_jsonl(args.test_answers))):
        gold = [document_from_dict(d, path=gold_file, line=k + 1) for k, d in enumerate(read_jsonl(gold_file))]
        texts = [d.text for d in gold]
        split[name] = {"gold": gold, "model": finished(answers, texts, tune / "decoding.yaml", set(labels.codes)),
                       "crf": crf_entities(crf_model, texts)}

    def rule(name: str, crf_min: float, model_min: float) -> list[list]:
        s = split[name]
        return [combine(m, c, crf_min, model_min) for m, c in zip(s["model"], s["crf"], strict=True)]

    grid = [{"crf_min": a, "model_min": b, "dev_f1": scores(split["dev"]["gold"], rule("dev", a, b), labels)["f1"]}
            for a in GRID for b in GRID]
    best = max(grid, key=lambda g: g["dev_f1"])
    log(f"chosen on dev: CRF alone from {best['crf_min']}, nerft alone from {best['model_min']} "
        f"(dev F1 {best['dev_f1']})")
    test, dev = split["test"], split["dev"]
    systems = [("character CRF", test["crf"], dev["crf"]),
               ("nerft, tuned decoding", test["model"], dev["model"]),
               ("union (both thresholds 0)", rule("test", 0, 0), rule("dev", 0, 0)),
               ("intersection (agreed mentions only)", rule("test", NEVER, NEVER), rule("dev", NEVER, NEVER)),
               (f"combined, chosen on dev (CRF alone >= {best['crf_min']:g}, nerft alone >= "
                f"{best['model_min']:g})", rule("test", best["crf_min"], best["model_min"]),
                rule("dev", best["crf_min"], best["model_min"]))]
    rows = [{"system": name, "dev_f1": scores(dev["gold"], d, labels)["f1"], **scores(test["gold"], t, labels)}
            for name, t, d in systems]
    ceiling = union_recall(test["gold"], test["model"], test["crf"])
    cols = ["system", "dev_f1", "precision", "recall", "f1", *sorted({c for r in rows for c in r if c[:3] == "f1_"})]
    md = (f"## nerft and the character CRF combined (test: {len(test['gold'])} documents of {shown(args.test)}; "
          f"thresholds chosen on {len(dev['gold'])} dev documents)\n\n" + markdown_table(rows, cols)
          + f"\n\nnerft: the answers of `{shown(args.test_answers)}` finished with "
          f"`{shown(tune / 'decoding.yaml')}`. CRF: "
          f"`crf_baseline` features, L-BFGS {args.iterations} iterations on `{shown(args.train)}`; a CRF mention's "
          "confidence is the lowest marginal of its characters' tags. Gold mentions that either system gives "
          f"(the most a chooser between them could recall): {ceiling} %. Grid of both thresholds: the JSON.")
    write_results(args.out_name, {"benchmark": "CRF hybrid", "tune": str(tune), "test_answers": args.test_answers,
                                  "train": args.train, "iterations": args.iterations, "chosen": best,
                                  "union_recall": ceiling, "rows": rows, "grid": grid}, md, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
