"""Learning curve: strict F1 against the number of training documents K, per recipe, on the whole test split.

    python -m benchmarks.learning_curve                                   # K = 100, 400, 1600; every row
    python -m benchmarks.learning_curve --ks 100 --rows crf,nerft         # one size, two rows
    python -m benchmarks.learning_curve --ks 100,400 --rows "" \\
        --variant "rich:data.describe_labels=true,data.labels=configs/labels/ccfbdci-defined.yaml"

Every row trains on the first K documents of the seeded-shuffled train split (``scoring.shuffled_train``:
``nerft prepare``'s split, seed 42, shuffled with seed 42) and is scored by ``nerft evaluate`` on the test split
(``--test-docs`` to cut it). Epochs and stopping are chosen on dev, never on test:
- ``crf``: ``benchmarks/crf_baseline.py`` (L-BFGS, ``--crf-iterations``), nothing to choose;
- ``nerft``: nerft's CPU recipe (``--nerft-config``) for up to ``--nerft-epochs`` epochs over the K documents,
  dev F1 on the first ``--dev-docs`` dev documents after each epoch (or every ``--eval-every`` steps), the best
  adapter kept (``eval.every``, ``optim.epochs``, ``optim.max_minutes`` = ``--budget-min``);
- ``tutorial``: the tutorial's recipe (``benchmarks/tutorial_baseline.py``, its random sampler) for up to
  ``--tutorial-epochs`` epochs within the budget, an adapter saved after each epoch and at the end, the one with
  the best dev F1 scored on test (through nerft's predictor on the tutorial's prompt, as in B3), or with
  ``--tutorial-pick last`` the last one, without dev scoring (for a rerun whose choice an earlier run made);
  its answers cut at ``--tutorial-max-new-tokens`` (512, the tutorial's own cap: a weak adapter lists word after
  word of a long text up to the cap); its training is reused and its scoring resumed by a rerun;
  ``--tutorial-seed N`` trains it again with another LoRA initialisation and sampler order, as the row
  "tutorial seed N" (how much of its score is the draw);
- ``lexicon``: no model: the training annotations of the K documents looked up, i.e. what ``nerft predict
  --lexicon`` adds to an empty answer (``Lexicon.complete``, the predictor's default min-rate and min-count); the
  baseline any LLM row has to beat at small K, computed in seconds;
- ``--variant NAME:key=value,...``: more nerft rows ("nerft NAME") with config overrides.

Resumable: each (row, K) is written to ``--results``/``--out-name``.json as it finishes and skipped when it is
already there (``--redo`` measures again). Writes learning_curve.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from nerft.fileio import write_json
from nerft.jsonl import write_jsonl

from .common import (
    DEFAULT_MODEL,
    RESULTS,
    WORK,
    labels_beside,
    log,
    markdown_table,
    prepare_ccfbdci,
    read_jsonl,
    require,
    run_in_child,
    write_results,
)
from .scoring import parse_variant, predict_with_nerft, score, shuffled_train

DEFAULT_KS = "100,400,1600"
MODEL_FREE = ("crf", "lexicon")  # rows that need no LLM: no training budget, no epochs
DEFAULT_ROWS = "crf,lexicon,nerft,tutorial"
ROWS = ("crf", "lexicon", "nerft", "tutorial")


def build_parser() -> argparse.ArgumentParser:
    from .bench_train import NERFT_CPU_CONFIG

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--data-dir", default=None, help="nerft prepare output (default: ../shared CCFBDCI, seed 42)")
    parser.add_argument("--ks", default=DEFAULT_KS, help="training sizes: the first K documents of the shuffle")
    parser.add_argument("--rows", default=DEFAULT_ROWS, help="any of " + ", ".join(ROWS) + " (comma-separated)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                        help="one more nerft row with config overrides, e.g. 'sp:data.shared_prefix=true'")
    parser.add_argument("--budget-min", type=float, default=60.0, help="training budget per (row, K)")
    parser.add_argument("--nerft-config", default=str(NERFT_CPU_CONFIG))
    parser.add_argument("--nerft-epochs", type=int, default=10, help="most epochs for nerft rows")
    parser.add_argument("--eval-every", type=int, default=0, help="nerft dev evaluation every N steps "
                        "(0: after each epoch)")
    parser.add_argument("--tutorial-epochs", type=float, default=4, help="most epochs for the tutorial row "
                        "(its own recipe says 2)")
    parser.add_argument("--tutorial-pick", choices=("best", "last"), default="best",
                        help="which epoch adapter of the tutorial row is scored on test: the best on dev, or the "
                             "last without dev scoring (when an earlier run's dev scores already chose it)")
    parser.add_argument("--tutorial-seed", type=int, default=None,
                        help="draws the tutorial row's LoRA initialisation and sampler order (default: as the tutorial, "
                             "the Trainer's seed 42); another seed is its own row, 'tutorial seed N'")
    parser.add_argument("--tutorial-max-new-tokens", type=int, default=512,
                        help="answer cap when scoring the tutorial row: its own predict() generates at most 512 "
                             "tokens (0: nerft's bound from each text's length alone)")
    parser.add_argument("--crf-iterations", type=int, default=100)
    parser.add_argument("--dev-docs", type=int, default=200, help="dev documents that choose epochs and adapters")
    parser.add_argument("--test-docs", type=int, default=0, help="first N test documents (0: the whole split)")
    parser.add_argument("--batch-size", type=int, default=32, help="generation batch when scoring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--redo", action="store_true", help="measure (row, K) pairs already in the results again")
    parser.add_argument("--out-name", default="learning_curve")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK), help="scratch folder (splits, adapters, predictions)")
    return parser


class Curve:
    """The data every point shares, and the points measured so far (read back from the results file)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.data_dir = Path(args.data_dir) if args.data_dir else prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci")
        self.work = Path(args.work) / "learning_curve"
        self.work.mkdir(parents=True, exist_ok=True)
        self.train_file = str(shuffled_train(self.data_dir / "train.jsonl", self.work / "train.shuffled.jsonl"))
        self.gold = self.work / "gold-test.jsonl"
        write_jsonl(self.gold, read_jsonl(self.data_dir / "test.jsonl", args.test_docs or None))
        self.dev_gold = self.work / "gold-dev.jsonl"
        write_jsonl(self.dev_gold, read_jsonl(self.data_dir / "dev.jsonl", args.dev_docs or None))
        self.labels = labels_beside(self.data_dir / "test.jsonl")
        self.results = Path(args.results) / f"{args.out_name}.json"
        self.points: list[dict[str, Any]] = []
        self.earlier_commands: list[str] = []  # the invocations that measured the points read back
        if self.results.is_file():
            earlier = json.loads(self.results.read_text(encoding="utf-8"))
            self.points = earlier["points"]
            self.earlier_commands = earlier.get("earlier_commands", []) + [earlier["machine"]["command"]]

    def done(self, row: str, k: int) -> bool:
        return any(p["row"] == row and p["k"] == k for p in self.points)

    def scratch(self, row: str, k: int) -> Path:
        return self.work / f"{row.replace(' ', '-')}-k{k}"

    def score_test(self, pred: Path, out: Path, fmt: str | None) -> dict[str, Any]:
        return score(self.gold, str(pred), out, fmt, self.labels)


# ---------------------------------------------------------------------------------------------------------------
# One point per recipe


def crf_point(c: Curve, k: int) -> dict[str, Any]:
    from .crf_baseline import predict_crf, train_crf

    out = c.scratch("crf", k)
    out.mkdir(parents=True, exist_ok=True)
    trained = train_crf(c.train_file, out / "crf.crfsuite", k, c.args.crf_iterations)
    info = predict_crf(out / "crf.crfsuite", c.gold, out / "pred.jsonl")
    return {"examples": trained["train_docs"], "train_min": round(trained["train_s"] / 60, 2),
            "score_min": round(info["score_s"] / 60, 2),
            "choice": f"L-BFGS {c.args.crf_iterations} iterations",
            **c.score_test(out / "pred.jsonl", out / "eval", None)}


def lexicon_point(c: Curve, k: int) -> dict[str, Any]:
    """No model: the lexicon of the first K documents completes an empty answer for every test document."""
    from nerft.inference.options import PredictOptions
    from nerft.jsonl import read_documents
    from nerft.lexicon import Lexicon

    out = c.scratch("lexicon", k)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lexicon = Lexicon.from_documents(read_documents(c.train_file)[:k])
    built = time.perf_counter()
    options = PredictOptions()
    rows = [{"id": d.id, "text": d.text,
             "entities": [e.to_dict() for e in lexicon.complete(d.text, [], options.lexicon_min_rate,
                                                                 options.lexicon_min_count)]}
            for d in read_documents(c.gold)]
    write_jsonl(out / "pred.jsonl", rows)
    return {"examples": lexicon.documents, "train_min": round((built - start) / 60, 2),
            "score_min": round((time.perf_counter() - built) / 60, 2),
            "choice": f"min-rate {options.lexicon_min_rate:g}, min-count {options.lexicon_min_count}",
            **c.score_test(out / "pred.jsonl", out / "eval", None)}


def nerft_point(c: Curve, k: int, overrides: dict[str, Any], name: str) -> dict[str, Any]:
    """nerft's recipe on the first K documents: epochs with dev evaluation, the best adapter by dev F1."""
    from .bench_train import run_nerft

    args = c.args
    run_dir = c.scratch(name, k)
    shutil.rmtree(run_dir, ignore_errors=True)
    extra = {"data.dev": str(c.dev_gold), "eval.dev_docs": args.dev_docs or 10**9, "eval.every": args.eval_every,
             **overrides}
    config = args.nerft_config if Path(args.nerft_config).is_file() else None
    t = run_in_child(run_nerft, threads=args.threads, model=args.model, train_file=c.train_file, limit=k,
                     max_steps=-1, out_dir=str(run_dir), config_path=config, epochs=args.nerft_epochs, extra=extra,
                     max_seconds=args.budget_min * 60)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    dev = metrics.get("dev", {})
    info = run_in_child(predict_with_nerft, threads=args.threads, test_file=str(c.gold), limit=None,
                        out_file=str(run_dir / "pred.jsonl"), run_dir=str(run_dir), batch_size=args.batch_size)
    return {"examples": t["examples_available"], "steps": t["optimizer_steps"], "stop": t["stop"],
            "train_min": round(t["train_s"] / 60, 1), "score_min": round(info["score_s"] / 60, 2),
            "dev_f1": dev.get("best_f1"), "choice": f"best dev F1 at step {dev.get('best_step')}",
            **c.score_test(run_dir / "pred.jsonl", run_dir / "eval", info["format"])}


def train_tutorial_epochs(model: str, train_file: str, out_dir: str, limit: int, epochs: float,
                          max_seconds: float, seed: int | None = None) -> dict:
    """The tutorial's recipe on the first ``limit`` documents for ``epochs``, an adapter after each epoch."""
    from .tutorial_baseline import train

    return train(model, train_file, out_dir, limit=limit, max_seconds=max_seconds, num_train_epochs=epochs,
                 save_strategy="epoch", save_only_model=True, seed=seed)


def tutorial_row(seed: int | None) -> str:
    """The tutorial row's name: a seed other than the tutorial's own is a row of its own."""
    return "tutorial" if seed is None else f"tutorial seed {seed}"


def is_tutorial(row: str) -> bool:
    return row == "tutorial" or row.startswith("tutorial seed ")


def tutorial_point(c: Curve, k: int) -> dict[str, Any]:
    """The tutorial's recipe on the first K documents; of its epoch adapters, the best on dev is scored on test.
    A finished training (``train.json`` with the same K, epochs, budget and model) is reused, and the scoring
    resumes where a stopped run left it, so a point that outlasts a session is finished by the next one."""
    args = c.args
    out = c.scratch(tutorial_row(args.tutorial_seed), k)
    recipe = {"model": args.model, "k": k, "epochs": args.tutorial_epochs, "budget_min": args.budget_min,
              **({"seed": args.tutorial_seed} if args.tutorial_seed is not None else {})}
    record = out / "train.json"
    t = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    if t.get("recipe_args") == recipe and Path(t.get("adapter") or "").is_dir():
        log(f"tutorial K={k}: training reused from {record}")
    else:
        shutil.rmtree(out, ignore_errors=True)
        t = run_in_child(train_tutorial_epochs, threads=args.threads, model=args.model, train_file=c.train_file,
                         out_dir=str(out), limit=k, epochs=args.tutorial_epochs, max_seconds=args.budget_min * 60,
                         seed=args.tutorial_seed)
        write_json(record, {"recipe_args": recipe, **t})
    options = {"max_new_tokens": args.tutorial_max_new_tokens or None}
    candidates = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not candidates or int(candidates[-1].name.split("-")[1]) != t["optimizer_steps"]:
        candidates.append(Path(t["adapter"]))  # stopped by the budget inside an epoch: its last state too
    best, best_f1 = candidates[-1], None
    if len(candidates) > 1 and args.tutorial_pick == "best":
        for adapter in candidates:
            pred = out / f"dev-{adapter.name}.jsonl"
            run_in_child(predict_with_nerft, threads=args.threads, test_file=str(c.dev_gold), limit=None,
                         out_file=str(pred), base=args.model, adapter=str(adapter), batch_size=args.batch_size,
                         options=options, resume=True)
            f1 = score(c.dev_gold, str(pred), out / f"dev-eval-{adapter.name}", "tutorial", c.labels)["f1"]
            log(f"tutorial K={k}: {adapter.name} dev F1 {f1:.2f}")
            if best_f1 is None or f1 > best_f1:
                best, best_f1 = adapter, f1
    info = run_in_child(predict_with_nerft, threads=args.threads, test_file=str(c.gold), limit=None,
                        out_file=str(out / "pred.jsonl"), base=args.model, adapter=str(best),
                        batch_size=args.batch_size, options=options, resume=True)
    return {"examples": t["examples_available"], "steps": t["optimizer_steps"], "stop": t["stop"],
            "train_min": round(t["train_s"] / 60, 1), "score_min": round(info["score_s"] / 60, 2),
            "dev_f1": best_f1,
            "choice": tutorial_choice(best.name, len(candidates), best_f1 is not None)
            + (f"; answers cut at {args.tutorial_max_new_tokens} tokens" if args.tutorial_max_new_tokens else ""),
            **c.score_test(out / "pred.jsonl", out / "eval", "tutorial")}


def tutorial_choice(adapter: str, candidates: int, by_dev: bool) -> str:
    """What the tutorial point scored: the only adapter, the best on dev, or the last of several."""
    if candidates == 1:
        return f"{adapter}, the only adapter"
    return f"{adapter} of {candidates} adapters " + ("by dev F1" if by_dev else "(the last; no dev scoring)")


# ---------------------------------------------------------------------------------------------------------------
# The plan, the loop, the report


def plan(args: argparse.Namespace) -> list[tuple[str, int, dict[str, Any] | None]]:
    """(row name, K, nerft overrides or None) in the order they run: small K first, so a partial run is a curve."""
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROWS)}")
    named = [(tutorial_row(args.tutorial_seed) if r == "tutorial" else r, {} if r == "nerft" else None) for r in rows]
    named += [(f"nerft {name}", overrides) for name, overrides in map(parse_variant, args.variant)]
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    return [(row, k, overrides) for k in ks for row, overrides in named]


def measure(c: Curve, row: str, k: int, overrides: dict[str, Any] | None) -> dict[str, Any]:
    if row == "crf":
        return crf_point(c, k)
    if row == "lexicon":
        return lexicon_point(c, k)
    if is_tutorial(row):
        return tutorial_point(c, k)
    return nerft_point(c, k, overrides or {}, row)


def run_points(c: Curve, todo: list[tuple[str, int, dict[str, Any] | None]]) -> None:
    start = time.perf_counter()
    for i, (row, k, overrides) in enumerate(todo, 1):
        if c.done(row, k) and not c.args.redo:
            log(f"[{i}/{len(todo)}] {row} K={k}: already measured, skipped")
            continue
        log(f"[{i}/{len(todo)}] {row} K={k}: training (elapsed {(time.perf_counter() - start) / 60:.1f} min)")
        limits = {} if row in MODEL_FREE else {
            "budget_min": c.args.budget_min,
            "max_epochs": c.args.tutorial_epochs if is_tutorial(row) else c.args.nerft_epochs}
        point = {"row": row, "k": k, **({"overrides": overrides} if overrides else {}), **limits,
                 **({"dev_docs": c.args.dev_docs} if row not in MODEL_FREE else {}), **measure(c, row, k, overrides)}
        c.points = [p for p in c.points if not (p["row"] == row and p["k"] == k)] + [point]
        log(f"[{i}/{len(todo)}] {row} K={k}: test F1 {point['f1']:.2f}")
        write_report(c)


def gaps(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per K: each LLM row's F1 minus the model-free rows' (the issue's targets: >= CRF + 10 at 100 and 400, >= CRF
    at 1,600; the lexicon alone is the other baseline a user has for free)."""
    base = {(p["row"], p["k"]): p["f1"] for p in points if p["row"] in MODEL_FREE}
    out = []
    for p in points:
        if p["row"] in MODEL_FREE or not any((b, p["k"]) in base for b in MODEL_FREE):
            continue
        row = {"row": p["row"], "k": p["k"], "f1": p["f1"]}
        for b in MODEL_FREE:
            if (b, p["k"]) in base:
                row[f"{b}_f1"], row[f"minus_{b}"] = base[b, p["k"]], round(p["f1"] - base[b, p["k"]], 2)
        out.append(row)
    return out


def write_report(c: Curve) -> None:
    from nerft.plots import line_chart, safe_plot

    args, points = c.args, sorted(c.points, key=lambda p: (p["k"], p["row"]))
    ks = sorted({p["k"] for p in points})
    names = list(dict.fromkeys(p["row"] for p in points))
    pivot = [{"row": n, **{f"K={k}": next((p["f1"] for p in points if p["row"] == n and p["k"] == k), None)
                           for k in ks}} for n in names]
    label_cols = sorted({col for p in points for col in p if col.startswith("f1_") and col != "f1_raw_answers"})
    cols = ["row", "k", "examples", "budget_min", "max_epochs", "steps", "stop", "train_min", "score_min", "choice",
            "dev_f1", "precision", "recall", "f1", *label_cols]
    n_test = len(read_jsonl(c.gold))
    gap_rows = gaps(points)
    gap_cols = ["row", "k", "f1", *(col for b in MODEL_FREE for col in (f"{b}_f1", f"minus_{b}")
                                    if any(col in g for g in gap_rows))]
    md = (f"## Learning curve: strict F1 against training documents K ({n_test} test documents, `nerft evaluate`)"
          "\n\n" + markdown_table(pivot, ["row", *[f"K={k}" for k in ks]])
          + "\n\n" + markdown_table(points, cols)
          + ("\n\nLLM rows minus the model-free rows at the same K:\n\n"
             + markdown_table(gap_rows, gap_cols) if gap_rows else "")
          + "\n\nTraining data: the first K documents of the seeded-shuffled train split. budget_min, max_epochs: "
          "the limits each LLM point trained under (dev evaluation not counted in the budget); epochs and adapters "
          "chosen on the first dev documents (choice, dev_f1; as many as the --dev-docs of the command that "
          "measured the point: dev_docs where recorded); examples: documents kept after the recipe's own filters "
          "(nerft: data.empty_share). The header names the last command; earlier points come from the commands "
          "below (and benchmarks/HISTORY.md)."
          + "".join(f"\n\nEarlier points of this table: `{cmd}`" for cmd in dict.fromkeys(c.earlier_commands)))
    payload = {"benchmark": "learning curve", "model": args.model, "train_file": c.train_file, "test_docs": n_test,
               "dev_docs": args.dev_docs, "budget_min": args.budget_min, "points": points, "gaps": gap_rows,
               "earlier_commands": list(dict.fromkeys(c.earlier_commands))}
    write_results(args.out_name, payload, md, Path(args.results))
    series = {n: [(p["k"], p["f1"]) for p in points if p["row"] == n] for n in names}
    safe_plot(line_chart, series, Path(args.results) / f"{args.out_name}.png", title="strict F1 against K",
              xlabel="training documents K (first K of the seeded shuffle)", ylabel="strict micro F1", log_x=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    todo = plan(args)
    if any(row not in MODEL_FREE for row, _, _ in todo):
        args.model = str(require(Path(args.model), "build it with ../shared/bin/get-qwen2.5-coder-0.5b"))
    c = Curve(args)
    left = [t for t in todo if args.redo or not c.done(t[0], t[1])]
    log(f"plan: {len(todo)} points ({len(left)} to measure), up to {args.budget_min:g} min of training each for "
        "the LLM rows, plus dev and test scoring")
    run_points(c, todo)
    if not left:
        write_report(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
