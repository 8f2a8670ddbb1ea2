"""B3 accuracy under a fixed budget: the tutorial's recipe vs nerft's, equal wall-clock time and equal data.

    python -m benchmarks.bench_accuracy                                  # full: 60 min each, whole test split
    python -m benchmarks.bench_accuracy --budget-min 5 --test-docs 200   # a reduced form
    python -m benchmarks.bench_accuracy --variant lr5e-4:optim.lr=5e-4 --variant nopad:data.packing=true

Rows (each trained in a fresh process; all scored by ``nerft evaluate`` on the same test documents):
- ``zero-shot``: the base model with nerft's prompt, no fine-tuning;
- ``jieba``: jieba's part-of-speech tagger (nr* -> PER, ns -> GPE, nt -> ORG), no model;
- ``crf``: the character CRF of ``benchmarks/crf_baseline.py`` trained on the whole train split (no budget: a few
  minutes on one core), the classic supervised baseline;
- ``tutorial (equal time)``: the tutorial's recipe for ``--budget-min`` of training on the seeded-shuffled train
  split, read in that order (its LR schedule stays the 2-epoch one; the budget stops it at a step boundary);
  K = the examples it got through;
- ``nerft (equal time)``: nerft's CPU recipe for the same budget through its own wall-clock budget
  (``optim.max_minutes``: warmup and decay run over the budget's time, training ends at the first step after it);
  or, with ``--nerft-steps N``, a schedule of N steps stopped at the budget like the tutorial;
- ``nerft (equal data)``: nerft's recipe for one pass over the same first K examples;
- ``+constrained`` (opt-in, ``--rows ...,nerft+constrained``): the nerft equal-time model scored with constrained
  decoding;
- ``--variant NAME:key=value,...``: more nerft equal-time runs with config overrides (what each change buys);
- ``--score-run NAME=RUN_DIR[:constrained]``: score a run directory that already exists (no training);
- ``--tune``: after each nerft row scored on test, ``nerft tune`` chooses its decoding thresholds (min-score,
  per label, the run's lexicon and min-rate) on the dev split (``--tune-dev-docs``), and the test split is scored
  with them as the row ``NAME +tuned`` (``tune_min``: the dev pass and the grid; ``tuned``: the setting chosen).

``--append`` keeps the rows already in the results file, so rows can be added by later invocations, e.g.
``--rows zero-shot --append`` or ``--rows "" --score-run "nerft +constrained=benchmarks/work/b3/nerft:constrained=true"
--append`` (``--score-split dev`` scores such rows, and ``--variant`` rows, on the first ``--test-docs`` dev documents
instead: how options are ranked without looking at test). The zero-shot row scores the first ``--zero-shot-docs`` (400) documents only, answers cut at 64 tokens.

The tutorial's adapter is scored with nerft's predictor on its own prompt (B2 checks that it writes what the
tutorial's predict() writes; ``--tutorial-scorer tutorial`` uses predict() itself, one text at a time, slow).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

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
from .scoring import (
    parse_variant,
    predict_with_jieba,
    predict_with_nerft,
    predict_with_tutorial,
    score,
    shuffled_train,
    train_tutorial,
    tune_run,
)

# ---------------------------------------------------------------------------------------------------------------
# One invocation: the options, the shared state of its rows, each kind of row, the report


def build_parser() -> argparse.ArgumentParser:
    from .bench_train import NERFT_CPU_CONFIG

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--data-dir", default=None, help="nerft prepare output (default: ../shared CCFBDCI)")
    parser.add_argument("--budget-min", type=float, default=60.0, help="training wall-clock budget per recipe")
    parser.add_argument("--test-docs", type=int, default=0, help="first N test documents (0: the whole split)")
    parser.add_argument("--rows", default="zero-shot,jieba,crf,tutorial,nerft,nerft-data",
                        help="add nerft+constrained to also score nerft's equal-time model with constrained "
                             "decoding (about 10x slower to score in a short check: hours on the whole split)")
    parser.add_argument("--nerft-config", default=str(NERFT_CPU_CONFIG))
    parser.add_argument("--nerft-steps", type=int, default=None, help="schedule nerft's equal-time runs over N "
                        "steps, stopped at the budget (default: nerft's own time budget, optim.max_minutes)")
    parser.add_argument("--equal-data-k", type=int, default=None, help="K for the equal-data row (default: what "
                        "the tutorial got through)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,... extra nerft equal-time "
                        "runs with config overrides")
    parser.add_argument("--tutorial-scorer", choices=("nerft", "tutorial"), default="nerft")
    parser.add_argument("--batch-size", type=int, default=32, help="generation batch when scoring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zero-shot-docs", type=int, default=400, help="the zero-shot row scores only the first N "
                        "test documents (0: all), with answers cut at --zero-shot-max-new-tokens: the untuned "
                        "model writes prose until its length bound, which costs an hour on the whole split")
    parser.add_argument("--zero-shot-max-new-tokens", type=int, default=64)
    parser.add_argument("--score-run", action="append", default=[], metavar="NAME=RUN_DIR[:key=value,...]",
                        help="score an existing nerft run directory (no training) as one more row, with "
                        "PredictOptions overrides, e.g. 'nerft +constrained=RUN:constrained=true'")
    parser.add_argument("--score-split", choices=("test", "dev"), default="test",
                        help="what --score-run and --variant rows score: the test documents, or the first "
                        "--test-docs dev documents (to choose options without looking at test)")
    parser.add_argument("--tune", action="store_true", help="after each nerft row scored on test, choose its "
                        "decoding thresholds on dev with nerft tune and score test with them (row NAME +tuned)")
    parser.add_argument("--tune-dev-docs", type=int, default=0, help="dev documents --tune chooses on (0: all)")
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out-name's JSON "
                        "(rows of the same name are replaced) and add this invocation's")
    parser.add_argument("--out-name", default="b3_accuracy")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK), help="scratch folder (splits, adapters, predictions)")
    return parser


class Bench:
    """What every row of one invocation shares: the model, the data, the gold file, and the rows so far (kept in
    ``partial.json`` as each one finishes)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        self.variants = [parse_variant(v) for v in args.variant]
        model_free = set(self.wanted) <= {"jieba", "crf"} and not self.variants and not args.score_run
        self.model = args.model if model_free else str(require(Path(args.model),
                                                               "build it with ../shared/bin/get-qwen2.5-coder-0.5b"))
        self.data_dir = Path(args.data_dir) if args.data_dir else prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci")
        self.work = Path(args.work) / "b3"
        self.work.mkdir(parents=True, exist_ok=True)
        self.train_file = str(shuffled_train(self.data_dir / "train.jsonl", self.work / "train.shuffled.jsonl"))
        self.gold = self.work / "gold.jsonl"
        write_jsonl(self.gold, read_jsonl(self.data_dir / "test.jsonl", args.test_docs or None))
        self.n_test = len(read_jsonl(self.gold))
        self.labels = labels_beside(self.data_dir / "test.jsonl")
        self.config = args.nerft_config if Path(args.nerft_config).is_file() else None
        self.budget = args.budget_min * 60
        self.rows: list[dict[str, Any]] = []
        self.earlier: dict[str, Any] = {}
        previous = Path(args.results) / f"{args.out_name}.json"
        if args.append and previous.is_file():
            self.earlier = json.loads(previous.read_text(encoding="utf-8"))
            self.rows = self.earlier["rows"]
        self.start = time.perf_counter()

    def dev_gold(self) -> Path:
        """The first --test-docs documents of the dev split, for rows that choose options without looking at test."""
        path = self.work / "gold-dev.jsonl"
        write_jsonl(path, read_jsonl(self.data_dir / "dev.jsonl", self.args.test_docs or None))
        return path

    def add_tuned_row(self, name: str, run_dir: str | Path, options: dict[str, Any] | None = None,
                      train: dict[str, Any] | None = None) -> None:
        """With --tune: ``nerft tune`` on dev chooses the run's decoding thresholds; ``name +tuned`` scores test
        with them."""
        if not self.args.tune:
            return
        dev = self.work / "gold-tune-dev.jsonl"
        write_jsonl(dev, read_jsonl(self.data_dir / "dev.jsonl", self.args.tune_dev_docs or None))
        out = self.work / f"tune-{name.replace(' ', '_')}"
        shutil.rmtree(out, ignore_errors=True)  # a retrained run answers anew
        t = run_in_child(tune_run, threads=self.args.threads, run_dir=str(run_dir), dev_file=str(dev),
                         out_dir=str(out), options={"batch_size": self.args.batch_size, **(options or {})})
        tuned = f"{name} +tuned"
        info = self.predict_nerft(tuned, run_dir=str(run_dir), options=t["decoding"])
        self.add_row(tuned, self.pred_path(tuned), info, train,
                     extra={"tune_min": round(t["tune_s"] / 60, 2), "dev_f1": t["dev_f1"], "tuned": t["setting"]})

    def pred_path(self, name: str) -> str:
        return str(self.work / f"pred-{name.replace(' ', '_')}.jsonl")

    def add_row(self, name: str, pred_file: str, info: dict[str, Any], train: dict[str, Any] | None = None,
                gold_file: Path | None = None, extra: dict[str, Any] | None = None) -> None:
        gold_file = gold_file or self.gold
        self.rows[:] = [r for r in self.rows if r["row"] != name]
        row: dict[str, Any] = {"row": name, "test_docs": len(read_jsonl(gold_file))}
        if train:
            row.update({"examples_seen": train.get("examples"), "steps": train.get("optimizer_steps"),
                        "train_min": round(train["train_s"] / 60, 1)})
        row["score_min"] = round(info["score_s"] / 60, 2)
        row.update(extra or {})
        row.update(score(gold_file, pred_file, self.work / f"eval-{name.replace(' ', '_')}", info.get("format"),
                         self.labels))
        self.rows.append(row)
        log(f"{name}: strict F1 {row['f1']:.2f} (elapsed {(time.perf_counter() - self.start) / 60:.1f} min)")
        partial = {"benchmark": "B3 accuracy (partial)", "rows": self.rows}
        (self.work / "partial.json").write_text(json.dumps(partial, ensure_ascii=False, indent=2), encoding="utf-8")

    def predict_nerft(self, name: str, gold_file: Path | None = None, **kwargs: Any) -> dict[str, Any]:
        """nerft's predictor in a fresh process on ``gold_file`` (default: the test documents) -> ``name``'s file."""
        return run_in_child(predict_with_nerft, threads=self.args.threads, test_file=str(gold_file or self.gold),
                            limit=None, out_file=self.pred_path(name), batch_size=self.args.batch_size, **kwargs)


def run_reference_rows(b: Bench) -> None:
    """Rows without fine-tuning: zero-shot (nerft's prompt), jieba's POS tagger, the character CRF."""
    args = b.args
    if "zero-shot" in b.wanted:
        zero_gold = b.gold
        if args.zero_shot_docs and args.zero_shot_docs < b.n_test:
            zero_gold = b.work / "gold-zero-shot.jsonl"
            write_jsonl(zero_gold, read_jsonl(b.gold, args.zero_shot_docs))
        info = b.predict_nerft("zero-shot", zero_gold, base=b.model, prompt_style="nerft",
                               options={"max_new_tokens": args.zero_shot_max_new_tokens})
        b.add_row("zero-shot (nerft prompt)", b.pred_path("zero-shot"), info, gold_file=zero_gold)
    if "jieba" in b.wanted:
        info = predict_with_jieba(str(b.gold), None, b.pred_path("jieba"))
        b.add_row("jieba POS tagger", b.pred_path("jieba"), info)
    if "crf" in b.wanted:
        from .crf_baseline import predict_crf, train_crf

        model_file = b.work / "crf.crfsuite"
        trained = train_crf(b.train_file, model_file)
        info = predict_crf(model_file, b.gold, b.pred_path("crf"))
        b.add_row("character CRF (all train docs)", b.pred_path("crf"), info,
                  {"examples": trained["train_docs"], "optimizer_steps": None, "train_s": trained["train_s"]})


def run_tutorial_row(b: Bench) -> int | None:
    """The tutorial's recipe for the budget; returns K, the examples it got through."""
    t = run_in_child(train_tutorial, threads=b.args.threads, model=b.model, train_file=b.train_file,
                     out_dir=str(b.work / "tutorial"), max_seconds=b.budget)
    if b.args.tutorial_scorer == "tutorial":
        info = run_in_child(predict_with_tutorial, threads=b.args.threads, test_file=str(b.gold), limit=None,
                            out_file=b.pred_path("tutorial"), base=b.model, adapter=t["adapter"])
    else:
        info = b.predict_nerft("tutorial", base=b.model, adapter=t["adapter"])
    b.add_row("tutorial (equal time)", b.pred_path("tutorial"), info, t)
    return t["examples"]


def run_nerft_rows(b: Bench) -> None:
    """nerft's equal-time run (and ``--variant`` runs), each scored (and with +constrained if asked)."""
    from .bench_train import run_nerft

    # (row, overrides, gold): --score-split dev scores the variants on dev; the recipe's own row stays on test
    variant_gold = b.dev_gold() if b.variants and b.args.score_split == "dev" else None
    runs = [("nerft (equal time)", {}, None)] if "nerft" in b.wanted else []
    runs += [(f"nerft {name} (equal time)", overrides, variant_gold) for name, overrides in b.variants]
    steps, threads = b.args.nerft_steps, b.args.threads
    for name, overrides, gold in runs:
        run_dir = b.work / name.split(" (")[0].replace(" ", "-")
        shutil.rmtree(run_dir, ignore_errors=True)
        if steps:  # a step schedule, cut at the budget from outside
            t = run_in_child(run_nerft, threads=threads, model=b.model, train_file=b.train_file, limit=None,
                             max_steps=steps, out_dir=str(run_dir), config_path=b.config, extra=overrides,
                             max_seconds=b.budget)
        else:  # nerft's own budget (run_nerft's max_seconds is optim.max_minutes); one epoch is only a cap
            t = run_in_child(run_nerft, threads=threads, model=b.model, train_file=b.train_file, limit=None,
                             max_steps=-1, out_dir=str(run_dir), config_path=b.config, extra=overrides,
                             max_seconds=b.budget)
        name += " [dev]" if gold else ""
        info = b.predict_nerft(name, gold, run_dir=str(run_dir))
        b.add_row(name, b.pred_path(name), info, t, gold_file=gold)
        if gold is None:
            b.add_tuned_row(name, run_dir, train=t)
        if name == "nerft (equal time)" and "nerft+constrained" in b.wanted:
            cname = "nerft (equal time) +constrained"
            info = b.predict_nerft(cname, run_dir=str(run_dir), options={"constrained": True})
            b.add_row(cname, b.pred_path(cname), info, t)


def run_equal_data_row(b: Bench, k: int | None) -> None:
    """nerft's recipe for one pass over the first K documents of the shuffled split (its own epoch shuffle)."""
    from .bench_train import run_nerft

    if not k:
        raise SystemExit("the equal-data row needs K: run the tutorial row or pass --equal-data-k")
    run_dir = b.work / "nerft-data"
    shutil.rmtree(run_dir, ignore_errors=True)
    t = run_in_child(run_nerft, threads=b.args.threads, model=b.model, train_file=b.train_file, limit=k,
                     max_steps=-1, out_dir=str(run_dir), config_path=b.config, epochs=1)
    info = b.predict_nerft("nerft-data", run_dir=str(run_dir))
    b.add_row(f"nerft (equal data, K={k})", b.pred_path("nerft-data"), info, t)


def run_score_rows(b: Bench) -> None:
    """``--score-run`` rows: existing run directories scored on test, or on the first dev documents."""
    args = b.args
    score_gold = b.dev_gold() if args.score_run and args.score_split == "dev" else b.gold
    for spec in args.score_run:
        name, _, where = spec.partition("=")
        run_dir, _, opts = where.partition(":")
        options = parse_variant(f"x:{opts}")[1] if opts else {}
        if args.score_split == "dev":
            name += " [dev]"
        info = b.predict_nerft(name, score_gold, run_dir=run_dir, options=options)
        b.add_row(name, b.pred_path(name), info, gold_file=score_gold)
        if args.score_split == "test":
            b.add_tuned_row(name, run_dir, options)


def write_report(b: Bench, k: int | None) -> None:
    args, rows = b.args, b.rows
    label_cols = sorted({c for r in rows for c in r if c.startswith("f1_") and c != "f1_raw_answers"})
    tuned = any("tuned" in r for r in rows)
    cols = ["row", "test_docs", "examples_seen", "steps", "train_min", "score_min",
            *(["tune_min", "dev_f1"] if tuned else []), "precision", "recall", "f1",
            *label_cols, "parse_failures", "hallucinations", *(["tuned"] if tuned else [])]
    k = k or b.earlier.get("equal_data_k")
    steps = args.nerft_steps or b.earlier.get("nerft_steps")
    earlier_commands = b.earlier.get("earlier_commands", []) + ([b.earlier["machine"]["command"]] if b.earlier else [])
    payload = {"benchmark": "B3 accuracy under a fixed budget", "model": b.model, "budget_min": args.budget_min,
               "test_docs": b.n_test, "train_file": b.train_file, "equal_data_k": k, "nerft_steps": steps,
               "nerft_config": b.config, "tutorial_scorer": args.tutorial_scorer, "rows": rows,
               "earlier_commands": earlier_commands}
    dev_only = bool(rows) and all("[dev]" in r["row"] for r in rows)
    shown = max([r["test_docs"] for r in rows if dev_only or "[dev]" not in r["row"]], default=b.n_test)
    # the budget of this invocation's trainings; a table of runs only scored (--score-run) trained nothing here
    trained = any(isinstance(r.get("train_min"), (int, float)) for r in rows)
    budget = f"{args.budget_min:g} min training budget per recipe; " if trained else ""
    md = (f"## B3 accuracy ({Path(b.model).name}; {budget}strict micro "
          f"P/R/F1 on the first {shown} documents of the seeded {'dev' if dev_only else 'test'} split "
          "(fewer where test_docs says so), "
          "`nerft evaluate`)\n\n"
          + markdown_table(rows, cols)
          + "\n\nTraining data: nerft prepare's train split (seed 42), shuffled with seed 42, read in that order. "
          + (f"nerft equal-time runs: {steps} scheduled steps, stopped at the budget. " if steps else
             "nerft equal-time runs: nerft's own time budget (optim.max_minutes), its schedule over the budget. ")
          + "The tutorial's adapter is scored "
          f"with {'its own predict()' if args.tutorial_scorer == 'tutorial' else 'nerft predictor on its prompt'}. "
          "The character CRF (benchmarks/crf_baseline.py) trains on the whole train split, no budget. "
          "hallucinations/parse failures come from re-reading the raw answers. Rows marked [dev] score the first "
          "test_docs documents of the dev split (for choosing decoding options without looking at test)."
          + "".join(f"\n\nEarlier rows of this table: `{c}`" for c in earlier_commands))
    write_results(args.out_name, payload, md, Path(args.results))
    _plot(rows, Path(args.results) / f"{args.out_name}.png")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    b = Bench(args)
    trainings = sum(r in b.wanted for r in ("tutorial", "nerft", "nerft-data")) + len(b.variants)
    log(f"plan: {trainings} trainings of up to {args.budget_min:g} min, scoring on {b.n_test} test documents; "
        f"at least {trainings * args.budget_min:.0f} min of training")
    run_reference_rows(b)
    k = args.equal_data_k
    if "tutorial" in b.wanted:
        k = k or run_tutorial_row(b)
    run_nerft_rows(b)
    if "nerft-data" in b.wanted:
        run_equal_data_row(b, k)
    run_score_rows(b)
    write_report(b, k)
    return 0


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    from .charts import ranked_bars

    ranked_bars([r["row"] for r in rows], [r["f1"] for r in rows], path, "strict micro F1")


if __name__ == "__main__":
    sys.exit(main())
