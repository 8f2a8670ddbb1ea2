"""``nerft tune``: choose the decoding thresholds on dev, for ``nerft predict/serve --config``.

What it chooses: ``--min-score`` (the confidence a mention needs to be kept), then per label
(``--label-min-scores``, kept only where it scores higher than the one threshold), and, given ``--lexicon``,
whether to complete answers from the training data and at which ``--lexicon-min-rate``.

The model answers the dev texts once, with nothing dropped and nothing added: OUT/dev-answers.jsonl (entities with
their scores; resumable like ``nerft predict --output``, and refused when OUT holds another model's or another
decoding's answers). Every candidate is then the predictor's own last step (``predict.base.finish_entities``)
replayed on those answers and scored by strict micro F1 against the dev gold: a grid costs seconds where a
decoding pass costs minutes, and ``nerft predict --config OUT/decoding.yaml`` gives exactly the entities scored.

OUT gets decoding.yaml (the best thresholds with the decoding flags given here), tune.json and tune.md (every
candidate's P/R/F1, the per-label choices) and tune.png (F1 against min-score, a line per lexicon setting).

The run's own decoding.yaml (what ``nerft train`` chose the same way at its end) is the starting point, as for
``predict``: its lexicon is tried again unless ``--lexicon`` says otherwise; ``--no-run-decoding`` starts from the
defaults. ``nerft train`` calls ``tune_documents`` with its run as the model and RUN/decoding.yaml as the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as cfglib
from .fileio import atomic_write, write_json
from .jsonl import iter_jsonl, write_jsonl
from .schema import Document, Entity, NerftError, entity_from_dict

if TYPE_CHECKING:
    from .inference.options import LoadOptions, PredictOptions
    from .labels import LabelSet
    from .lexicon import Lexicon

MIN_SCORES = [0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98]
MIN_RATES = [0.1, 0.2, 0.3, 0.5, 0.7]


def register(subparsers: Any, name: str = "tune", summary: str = "") -> argparse.ArgumentParser:
    from .inference.options import PredictOptions, add_load_arguments

    p = subparsers.add_parser(name, help=summary, description=__doc__.split("\n\n")[1])
    p.add_argument("--dev", required=True, help="gold documents to tune on (nerft JSONL or any format nerft "
                                                "evaluate reads); never the test split")
    p.add_argument("--out", "--output", dest="out", required=True,
                   help="folder for the dev answers, the report and decoding.yaml (an earlier run's answers are "
                        "reused)")
    p.add_argument("--min-scores", type=float, nargs="+", default=MIN_SCORES, metavar="X",
                   help=f"min-score candidates (default: {' '.join(map(str, MIN_SCORES))})")
    p.add_argument("--min-rates", type=float, nargs="+", default=MIN_RATES, metavar="X",
                   help=f"lexicon min-rate candidates, with --lexicon (default: {' '.join(map(str, MIN_RATES))})")
    p.add_argument("--per-label", action=argparse.BooleanOptionalAction, default=True,
                   help="also try a min-score per label (kept only where dev F1 rises)")
    add_load_arguments(p)
    cfglib.add_config_arguments(p, PredictOptions, skip={"min_score", "label_min_scores", "lexicon_min_rate"})
    p.set_defaults(func=run_tune)
    return p


def run_tune(args: argparse.Namespace) -> int:
    from .inference.location import decoding_options
    from .inference.options import LoadOptions

    load = cfglib.build_config(LoadOptions, args)
    options = decoding_options(load, args)
    if not all(0 <= v <= 1 for v in args.min_scores):
        raise NerftError(f"--min-scores: give values in [0, 1], got {' '.join(map(str, args.min_scores))}")
    if not all(0 < v <= 1 for v in args.min_rates):
        raise NerftError(f"--min-rates: give values in (0, 1], got {' '.join(map(str, args.min_rates))}")
    report = tune(load, options, args.dev, Path(args.out), args.min_scores, args.min_rates,
                  per_label=args.per_label)
    best = report["best"]
    print(f"nerft tune: dev F1 {100 * best['f1']:.2f} (P {100 * best['precision']:.2f}, R "
          f"{100 * best['recall']:.2f}) with {best['setting']}; as answered: {100 * report['answered']['f1']:.2f}")
    print(f"nerft tune: wrote {Path(args.out) / 'decoding.yaml'}, tune.md, tune.json, tune.png; use it with\n"
          f"  nerft predict --model {load.model or load.adapter or load.base} --config "
          f"{Path(args.out) / 'decoding.yaml'} ...")
    return 0


def tune(load: LoadOptions, options: PredictOptions, dev: str, out: Path, min_scores: list[float],
         min_rates: list[float], *, per_label: bool = True, progress: bool | None = None) -> dict[str, Any]:
    """Answer ``dev`` once (into ``out``), score every candidate (``choose``), write the report and
    decoding.yaml; returns the report."""
    from .evaluate import read_gold

    gold = read_gold(dev)
    if not gold:
        raise NerftError(f"--dev {dev} holds no documents")
    return tune_documents(load, options, gold, str(dev), out, min_scores, min_rates, per_label=per_label,
                          progress=progress)


def tune_documents(load: LoadOptions, options: PredictOptions, gold: list[Document], dev: str, out: Path,
                   min_scores: list[float], min_rates: list[float], *, per_label: bool = True,
                   progress: bool | None = None, decoding_file: Path | None = None) -> dict[str, Any]:
    """``tune`` on gold documents already read (``dev`` names them in the report); the chosen options go to
    ``decoding_file`` (default OUT/decoding.yaml), their lexicon named relative to it."""
    from .inference.options import PredictOptions
    from .lexicon import Lexicon

    lexicon = Lexicon.load(options.lexicon) if options.lexicon else None  # a bad lexicon fails before answering
    answering = dataclasses.replace(options, min_score=0.0, label_min_scores=[], lexicon=None,
                                    lexicon_min_rate=PredictOptions.lexicon_min_rate)
    labels, answers = answer_dev(load, answering, gold, out, progress)
    best, report = choose(gold, answers, labels, answering, options.lexicon, lexicon, min_scores, min_rates,
                          per_label)
    decoding_file = decoding_file or out / "decoding.yaml"
    report = {"dev": dev, "documents": len(gold), **report, "decoding": decoding_dict(best, decoding_file.parent)}
    write_report(report, out, decoding_file)
    return report


def choose(gold: list[Document], answers: list[list[Entity]], labels: LabelSet, answering: PredictOptions,
           lexicon_path: str | None, lexicon: Lexicon | None, min_scores: list[float], min_rates: list[float],
           per_label: bool = True) -> tuple[PredictOptions, dict[str, Any]]:
    """The best decoding options for ``answers`` (the model's entities per gold document, as answered with
    ``answering``), and a report of every candidate scored: each min-score, without the lexicon and with it at
    each min-rate (when there is one), then per label. The answers as they are (min-score 0, no lexicon) are
    always a candidate (``report["answered"]``); on a tie the simpler setting wins."""
    min_scores, min_rates = sorted({0.0, *min_scores}), sorted(set(min_rates))
    codes = set(labels.codes)

    def scored(candidate: PredictOptions) -> dict[str, Any]:
        return {**settings(candidate), **score(gold, answers, candidate, lexicon, codes, labels)}

    candidates = [dataclasses.replace(answering, min_score=m) for m in min_scores]  # [0]: as answered
    if lexicon is not None:
        candidates += [dataclasses.replace(answering, min_score=m, lexicon=lexicon_path, lexicon_min_rate=rate)
                       for rate in min_rates for m in min_scores]
    rows = [scored(c) for c in candidates]
    i = max(range(len(rows)), key=lambda k: (rows[k]["f1"], -len(rows[k]["setting"])))
    best = candidates[i]
    per_label_rows: list[dict[str, Any]] = []
    if per_label:
        best, per_label_rows = refine_per_label(best, rows[i]["f1"], min_scores, labels.codes, scored)
    return best, {"answered": rows[0], "best": scored(best), "grid": rows, "per_label": per_label_rows}


def answer_dev(load: LoadOptions, options: PredictOptions, gold: list[Document], out: Path,
               progress: bool | None) -> tuple[LabelSet, list[list[Entity]]]:
    """The model's answers to the dev texts (resumed from ``out`` when it holds them), as entity lists."""
    from .inference.loading import open_predictor
    from .predict.files import predict_file

    out.mkdir(parents=True, exist_ok=True)
    def where(name: str | None) -> str | None:  # a local folder by its absolute path, a hub id as it is
        return str(Path(name).expanduser().resolve()) if name and Path(name).expanduser().exists() else name

    source = {"model": where(load.model), "base": where(load.base), "adapter": where(load.adapter),
              "revision": load.revision, "backend": load.backend, "decoding": cfglib.to_dict(options)}
    if load.backend == "openai":  # which server answered (never its API key: this file is written to disk)
        source["server"] = [load.openai.base_url, load.openai.model_name]
    stamp = out / "dev-answers.source.json"
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) != source:
        raise NerftError(f"{out} holds dev answers of another model or decoding ({stamp}); pass another --out "
                         "or delete that folder")
    texts = out / "dev-texts.jsonl"
    rows = [{"id": str(k), "text": d.text} for k, d in enumerate(gold)]
    if texts.is_file() and list(obj for _, obj in iter_jsonl(texts)) != rows:
        raise NerftError(f"{out} holds answers to another dev file ({texts}); pass another --out or delete it")
    write_jsonl(texts, rows)
    write_json(stamp, source)
    predictor = open_predictor(load, options)
    predict_file(predictor, texts, out / "dev-answers.jsonl", chunk_size=options.batch_size * 4, progress=progress)
    by_id = {str(obj["id"]): obj for _, obj in iter_jsonl(out / "dev-answers.jsonl")}
    answers = [[entity_from_dict(e) for e in by_id[str(k)]["entities"]] for k in range(len(gold))]
    return predictor.labels, answers


def score(gold: list[Document], answers: list[list[Entity]], candidate: PredictOptions,
          lexicon: Lexicon | None, codes: set[str], labels: LabelSet) -> dict[str, float]:
    from .inference.base import finish_entities
    from .metrics import score_documents

    preds = [finish_entities(d.text, list(a), candidate, lexicon if candidate.lexicon else None, codes)
             for d, a in zip(gold, answers, strict=True)]
    micro = score_documents(gold, preds, labels=labels)["strict"]["micro"]
    return {k: micro[k] for k in ("precision", "recall", "f1")}


def settings(candidate: PredictOptions) -> dict[str, Any]:
    floors = candidate.label_min_score_map()
    parts = [f"min-score {candidate.min_score:g}"] if candidate.min_score else []
    parts += [f"{code} {floors[code]:g}" for code in floors]
    if candidate.lexicon:
        parts.append(f"lexicon min-rate {candidate.lexicon_min_rate:g}")
    return {"setting": ", ".join(parts) or "as answered", "min_score": candidate.min_score,
            "label_min_scores": list(candidate.label_min_scores),
            "lexicon_min_rate": candidate.lexicon_min_rate if candidate.lexicon else None}


def refine_per_label(best: PredictOptions, best_f1: float, min_scores: list[float], codes: list[str],
                     scored: Callable[[PredictOptions], dict[str, Any]]
                     ) -> tuple[PredictOptions, list[dict[str, Any]]]:
    """One pass over the labels: each label's own threshold, the others' as chosen so far; a label keeps the
    overall one unless its own raises dev F1."""
    tried: list[dict[str, Any]] = []
    floors: dict[str, float] = {}
    for code in codes:
        for m in min_scores:
            if m == best.min_score:
                continue
            pairs = [f"{c}={v:g}" for c, v in {**floors, code: m}.items()]
            row = scored(dataclasses.replace(best, label_min_scores=pairs))
            tried.append({**row, "label": code})
            if row["f1"] > best_f1:
                best_f1, floors[code] = row["f1"], m
    return dataclasses.replace(best, label_min_scores=[f"{c}={v:g}" for c, v in floors.items()]), tried


def decoding_dict(best: PredictOptions, out: Path) -> dict[str, Any]:
    """The options that differ from PredictOptions' defaults, the lexicon named relative to ``out`` (a config's
    relative paths are read from its own folder)."""
    from .inference.options import PredictOptions

    default, chosen = cfglib.to_dict(PredictOptions()), cfglib.to_dict(best)
    data = {k: v for k, v in chosen.items() if v != default.get(k) or k == "min_score"}
    if best.lexicon:
        data["lexicon"] = os.path.relpath(Path(best.lexicon).resolve(), out.resolve())
    return data


def write_report(report: dict[str, Any], out: Path, decoding_file: Path | None = None) -> None:
    import yaml

    from .plots import line_chart, safe_plot

    with atomic_write(decoding_file or out / "decoding.yaml") as f:
        f.write(f"# nerft tune on {report['dev']} ({report['documents']} documents): strict F1 "
                f"{100 * report['best']['f1']:.2f}, as answered {100 * report['answered']['f1']:.2f}\n")
        yaml.safe_dump(report["decoding"], f, allow_unicode=True, sort_keys=False)
    write_json(out / "tune.json", report)

    def pct(x: float) -> str:
        return f"{100 * x:.2f}"

    lines = [f"## nerft tune: {report['dev']} ({report['documents']} documents), strict micro scores", "",
             f"Best: **{report['best']['setting']}**: P {pct(report['best']['precision'])}, R "
             f"{pct(report['best']['recall'])}, F1 **{pct(report['best']['f1'])}** (as answered: "
             f"{pct(report['answered']['f1'])})", "", "| setting | P | R | F1 |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {pct(r['precision'])} | {pct(r['recall'])} | {pct(r['f1'])} |"
              for r in sorted(report["grid"], key=lambda r: -r["f1"])]
    if report["per_label"]:
        lines += ["", "Per-label thresholds tried (from the best setting above; a label keeps its own only where "
                      "F1 rose):", "", "| label | setting | F1 |", "|---|---|---|"]
        lines += [f"| {r['label']} | {r['setting']} | {pct(r['f1'])} |" for r in report["per_label"]]
    with atomic_write(out / "tune.md") as f:
        f.write("\n".join(lines) + "\n")
    series: dict[str, list[tuple[float, float]]] = {}
    for r in report["grid"]:
        name = "no lexicon" if r["lexicon_min_rate"] is None else f"lexicon min-rate {r['lexicon_min_rate']:g}"
        series.setdefault(name, []).append((r["min_score"], 100 * r["f1"]))
    safe_plot(line_chart, series, out / "tune.png", xlabel="min-score", ylabel="strict micro F1", values=False,
              title=f"dev F1 against min-score\nbest: {report['best']['setting']} ({pct(report['best']['f1'])})")
