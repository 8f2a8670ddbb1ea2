"""Beyond CCFBDCI: CCFBDCI, CLUENER2020 and Weibo NER, each scored on its test file (strict micro F1, per label too).

    python -m benchmarks.cross_dataset --list                      # the rows, in the order to run them
    python -m benchmarks.cross_dataset --rows crf,lexicon          # the cheap rows of every dataset (minutes)
    python -m benchmarks.cross_dataset --rows nerft-weibo-kall     # one row (about 100 minutes)
    python -m benchmarks.cross_dataset                             # every row not measured yet (about 12 hours)

Writes ``benchmarks/results/cross_dataset.{json,md,png}``. Resumable per row: each measured row is stored in
``WORK/cross_dataset/rows/<row>.json`` and never measured again (delete that file to redo it); the table is
rewritten from them after every row, each row with the command that measures it written above the table.

Data (``nerft prepare``, seed 42, once): CCFBDCI's seeded split; CLUENER with its official dev file as the test
set (``--test-from``: its test labels are not public) and dev carved from train; Weibo's official
train/dev/test files as given, its 8 types PER/ORG/LOC/GPE x .NAM/.NOM. The K rows train on the first K
documents of the train split in a seeded random order (seed 42).

Rows per dataset D (ccfbdci, cluener, weibo):
- ``crf-D-kK`` (K = 100, 400, all): the character CRF (``nerft.crf``, L-BFGS 100 iterations). Seconds to ~5 min.
- ``lexicon-D``: no model: what the training data annotates, completed into empty answers. Seconds.
- ``nerft-D-kK``: ``nerft train --config configs/qwen2.5-0.5b-cpu[-D].yaml`` (60 minutes of training for all
  of D; 10 and 20 minutes for K = 100 and 400, see ``MINUTES``; the decoding chosen on dev at its end, as ``nerft
  tune`` does), then ``nerft evaluate --score-with``. Measured for CCFBDCI's whole split: 60 training minutes are
  ~90 minutes of wall time with the dev evaluations and checkpoints, + ~6 min choosing the decoding on its 786 dev
  documents + test prediction at ~3.6 documents/s (CCFBDCI 1,572 docs ~7 min; CLUENER 1,343 longer texts ~8 min;
  Weibo 270 ~2 min).
- anchors: published figures beside them, labelled as other splits and models with their sources (no command).
- ``ood-*``: out of domain: the CCFBDCI-trained CRF and nerft scored on Weibo's test file (its .NAM mentions,
  types mapped to CCFBDCI's: ``--map-labels``), and the Weibo-trained ones on CCFBDCI's test file (CCFBDCI's
  types mapped to .NAM; their .NOM answers, which CCFBDCI never annotates, are not scored). Need the ``all`` rows of both datasets first; the nerft ones ~5-12 min each.
- ``mix-D``: one adapter for the three label sets: ``nerft train --config configs/mix-ccfbdci-cluener-weibo.yaml``
  on the three training splits (prepared with ``--labels configs/labels/D-defined.yaml``, each example prompted with
  its own dataset's labels) for 180 training minutes, the three single-dataset rows' time together (~4.5 hours of
  wall time; resumable: stop it with Ctrl-C or SIGTERM, which checkpoints, and run the row again). Scored on each
  test file with ``--label-set configs/labels/D-defined.yaml``, the decoding chosen on D's dev with ``nerft tune``
  (D's training lexicon, constrained, as train chooses it for a single-dataset run; CCFBDCI's is the one train
  chose at its end, the run's own label set). Tuning and scoring: ~25 minutes for the three.
- ``distill-ccfbdci-kK`` (K = 100, 400): the nerft-ccfbdci-kK run annotates the rest of CCFBDCI's train split,
  labels removed (``--unlabeled-max``, default 4,000 texts: ~15-26 min at 2.6-4.4 documents/s), and ``nerft
  distill`` trains a CRF on the K gold + the silver it chooses on dev (a CRF per candidate, the best dev F1); F1
  and documents/s of the distilled CRF beside the teacher's. ``distill-weibo-kall``: the Weibo teacher on CCFBDCI's texts.

Order to run them (each nerft row needs the machine alone; see benchmarks/README.md): ``crf``, ``lexicon`` (all
datasets, minutes), then ``nerft-weibo-kall``, ``nerft-cluener-kall``, ``nerft-ccfbdci-kall`` (the headline), the
``ood`` rows, ``nerft-*-k100``/``k400``, then the ``distill`` rows (they reuse the k100/k400/all runs), then the
``mix`` rows.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import (
    REPO,
    RESULTS,
    SHARED,
    WORK,
    log,
    markdown_table,
    nerft_cli,
    read_jsonl,
    require,
    strict_row,
    write_results,
)

DATASETS = ("ccfbdci", "cluener", "weibo")
KS = (100, 400, 0)  # 0: all
RECIPES = {"ccfbdci": "configs/qwen2.5-0.5b-cpu.yaml", "cluener": "configs/qwen2.5-0.5b-cpu-cluener.yaml",
           "weibo": "configs/qwen2.5-0.5b-cpu-weibo.yaml"}
# minutes of training per row: the whole training split gets the recipes' 60; K = 100 and 400 get 10 and 20, what
# benchmarks/results/learning_curve.md measured them needing (their best dev F1 came at steps 30 and 96 of 60 and 120,
# 8.7 and 18.2 minutes), with a dev evaluation every 20 steps instead of 60 so the best adapter is found among them
MINUTES = {100: 10, 400: 20, 0: 60}
# the mixture recipe and its folders in order (the first one's label set, dev split and lexicon are the run's own)
MIX_RECIPE, MIX_ORDER = "configs/mix-ccfbdci-cluener-weibo.yaml", ("ccfbdci", "cluener", "weibo")
CRF_ITERATIONS, UNLABELED_MAX = 100, 4000  # the defaults of --crf-iterations and --unlabeled-max
TO_CCFBDCI = "PER.NAM=PER,ORG.NAM=ORG,LOC.NAM=LOC,GPE.NAM=GPE"
TO_WEIBO = "PER=PER.NAM,ORG=ORG.NAM,LOC=LOC.NAM,GPE=GPE.NAM"
# published anchors: (dataset, row, F1, what and where)
ANCHORS = [
    ("cluener", "BERT+CRF (dev)", 80.76, "CLUENER2020 paper/repo, official dev set, BERT-base"),
    ("cluener", "BERT+Span (dev)", 81.12, "CLUENER2020 repo, official dev set"),
    ("cluener", "BERT-base (test)", 78.82, "CLUENER2020 paper, hidden test set"),
    ("cluener", "RoBERTa-wwm-large (test)", 80.42, "CLUENER2020 paper, hidden test set"),
    ("cluener", "BiLSTM-CRF (test)", 70.0, "CLUENER2020 paper, hidden test set"),
    ("weibo", "Lattice-LSTM", 58.79, "Zhang & Yang 2018, Weibo NER test"),
    ("weibo", "BERT+LSTM+CRF", 70.48, "as reported by Ma et al. 2020 (SoftLexicon), Weibo NER test"),
    ("weibo", "SoftLexicon+BERT", 70.50, "Ma et al. 2020, Weibo NER test"),
]


def budget(k: int) -> list[str]:
    """nerft train flags for a K row (the CCFBDCI recipe's own 120-step cap lifted: every row ends on its minutes)."""
    flags = ["--optim.max-steps", "100000", "--optim.max-minutes", str(MINUTES[k])]
    return flags + (["--eval.every", "20"] if k else [])


def source(dataset: str) -> list:
    """``nerft prepare``'s input flags for ``dataset`` (its files in ../shared/data)."""
    flags = {"ccfbdci": ["--input", SHARED / "data/ccfbdci/ccfbdci.jsonl"],
             "cluener": ["--input", SHARED / "data/cluener/train.json",
                         "--test-from", SHARED / "data/cluener/dev.json"],
             "weibo": ["--input", SHARED / "data/weibo"]}[dataset]
    require(Path(flags[1]), "the datasets live in ../shared/data (../shared/data/README.md)")
    return flags


class Bench:
    def __init__(self, args: argparse.Namespace, measure: tuple[str, ...] = ()):
        self.args = args
        self.work = Path(args.work) / "cross_dataset"
        self.rows_dir = self.work / "rows"
        self.rows_dir.mkdir(parents=True, exist_ok=True)
        self.data = dict(spec.split("=", 1) for spec in args.data.split(",")) if args.data else {}
        # rows measured on another machine stay in the table, except those named to be measured here (`measure`)
        committed = Path(args.results) / "cross_dataset.json"
        if committed.is_file():
            for row in json.loads(committed.read_text(encoding="utf-8")).get("rows", []):
                path = self.rows_dir / f"{row['row']}.json"
                if not path.is_file() and row["row"] not in measure:
                    path.write_text(json.dumps(row, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    def folder(self, dataset: str) -> Path:
        """The prepared split folder of ``dataset`` (prepared once; ``--data D=DIR`` gives one)."""
        if dataset in self.data:
            return Path(self.data[dataset])
        out = self.work / "data" / dataset
        if not (out / "test.jsonl").is_file():
            nerft_cli("prepare", *source(dataset), "--out", out, "--no-plot", "--overwrite")
        return out

    def described(self, dataset: str) -> Path:
        """``dataset`` prepared with its label set described (configs/labels/D-defined.yaml: what a data.mixture
        run prompts each example with), the same seeded split as ``folder`` (``--data D=DIR``: DIR itself)."""
        if dataset in self.data:
            return Path(self.data[dataset])
        out = self.work / "data" / f"{dataset}-defined"
        if not (out / "test.jsonl").is_file():
            plain = self.folder(dataset)
            labels = REPO / "configs" / "labels" / f"{dataset}-defined.yaml"
            nerft_cli("prepare", *source(dataset), "--labels", labels, "--out", out, "--no-plot", "--overwrite")
            for split in ("train", "dev", "test"):  # the rows of one dataset must score the same documents
                if read_jsonl(out / f"{split}.jsonl") != read_jsonl(plain / f"{split}.jsonl"):
                    raise SystemExit(f"{out}/{split}.jsonl differs from {plain}/{split}.jsonl: not the same split")
        return out

    def train_k(self, dataset: str, k: int) -> Path:
        """The first K documents of the seeded-shuffled train split (all: the whole of it, shuffled)."""
        path = self.work / "data" / f"{dataset}-train-k{k or 'all'}.jsonl"
        if not path.is_file():
            from nerft.jsonl import write_jsonl

            rows = read_jsonl(self.folder(dataset) / "train.jsonl")
            random.Random(42).shuffle(rows)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(path, rows[:k] if k else rows)
        return path

    def scratch(self, row: str) -> Path:
        path = self.work / row
        path.mkdir(parents=True, exist_ok=True)
        return path

    def evaluate(self, gold: Path, out: Path, pred: Path | None = None, model: Path | None = None,
                 map_labels: str | None = None, labels: str | None = None,
                 extra: list[str] | None = None) -> dict[str, Any]:
        args = ["evaluate", "--gold", gold, "--out", out, *(extra or [])]
        args += ["--pred", pred] if pred is not None else ["--score-with", model]
        args += ["--map-labels", map_labels] if map_labels else []
        args += ["--labels", labels] if labels else []
        nerft_cli(*args, "--quiet")
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        return {**strict_row(metrics["strict"]), "score_s": metrics.get("seconds")}


# ---------------------------------------------------------------------------------------------------- the rows


def crf_row(b: Bench, dataset: str, k: int, test: str | None = None, map_labels: str | None = None) -> dict:
    from nerft.crf import CrfTagger, train_crf
    from nerft.jsonl import read_documents, write_jsonl

    out = b.scratch(f"crf-{dataset}-k{k or 'all'}")
    model = out / "crf.crfsuite"
    trained = train_crf(read_documents(b.train_k(dataset, k)), model, b.args.crf_iterations) \
        if not model.is_file() else {"train_docs": None, "train_s": None}
    gold = b.folder(test or dataset) / "test.jsonl"
    tagger, docs = CrfTagger(model), read_documents(gold)
    start = time.perf_counter()
    rows = [{"id": d.id, "text": d.text, "entities": [e.to_dict() for e in tagger.tag(d.text)]} for d in docs]
    elapsed = time.perf_counter() - start
    pred = out / f"pred-{test or dataset}.jsonl"
    write_jsonl(pred, rows)
    scores = b.evaluate(gold, out / f"eval-{test or dataset}", pred=pred, map_labels=map_labels,
                        labels=None if not map_labels else str(b.folder(dataset) / "labels.json"))
    return {**trained, **scores, "docs_per_s": round(len(docs) / max(elapsed, 1e-9), 1)}


def lexicon_row(b: Bench, dataset: str) -> dict:
    from nerft.inference.options import PredictOptions
    from nerft.jsonl import read_documents, write_jsonl
    from nerft.lexicon import Lexicon

    out = b.scratch(f"lexicon-{dataset}")
    lexicon = Lexicon.from_documents(read_documents(b.train_k(dataset, 0)))
    o = PredictOptions()
    gold = b.folder(dataset) / "test.jsonl"
    write_jsonl(out / "pred.jsonl", [{"id": d.id, "text": d.text, "entities": [
        e.to_dict() for e in lexicon.complete(d.text, [], o.lexicon_min_rate, o.lexicon_min_count)]}
        for d in read_documents(gold)])
    return b.evaluate(gold, out / "eval", pred=out / "pred.jsonl")


def nerft_run(b: Bench, dataset: str, k: int) -> Path:
    """The nerft CPU recipe's run on the first K documents (trained once; its decoding chosen on dev at its end).
    A run cut off before its end (its metrics.json missing or not finished) continues from its latest checkpoint."""
    from nerft.train.checkpoint import list_checkpoints

    run = b.work / f"nerft-{dataset}-k{k or 'all'}" / "run"
    metrics = run / "metrics.json"
    if not (metrics.is_file() and json.loads(metrics.read_text(encoding="utf-8"))["train"]["finished"]):
        start = ["--resume", "latest"] if run.is_dir() and list_checkpoints(run) else ["--output.overwrite"]
        folder = b.folder(dataset)
        nerft_cli("train", "--config", REPO / RECIPES[dataset], "--train", b.train_k(dataset, k), "--dev",
                  folder / "dev.jsonl", "--output.dir", run, *start, *budget(k), *b.args.train_args.split())
    return run


def nerft_row(b: Bench, dataset: str, k: int, test: str | None = None, map_labels: str | None = None) -> dict:
    run = nerft_run(b, dataset, k)
    gold = b.folder(test or dataset) / "test.jsonl"
    scores = b.evaluate(gold, run.parent / f"eval-{test or dataset}", model=run, map_labels=map_labels)
    return {**scores, "docs_per_s": round(len(read_jsonl(gold)) / max(scores["score_s"] or 1e-9, 1e-9), 2)}


def mix_run(b: Bench) -> Path:
    """The data.mixture recipe's run on the three datasets' whole training splits (trained once, resumable)."""
    from nerft.train.checkpoint import list_checkpoints

    run = b.work / "nerft-mix" / "run"
    metrics = run / "metrics.json"
    if not (metrics.is_file() and json.loads(metrics.read_text(encoding="utf-8"))["train"]["finished"]):
        start = ["--resume", "latest"] if run.is_dir() and list_checkpoints(run) else ["--output.overwrite"]
        nerft_cli("train", "--config", REPO / MIX_RECIPE, "--data.mixture", *(b.described(d) for d in MIX_ORDER),
                  "--output.dir", run, *start, *b.args.train_args.split())
    return run


def mix_row(b: Bench, dataset: str) -> dict:
    """The mixture run scored on ``dataset``'s test file, prompted with its label set; the decoding: ``nerft tune``
    on ``dataset``'s dev with its training lexicon, constrained, as train chooses it for a single-dataset run (the
    same for all three datasets, the first one included, whatever decoding the run chose at its end)."""
    run = mix_run(b)
    folder = b.described(dataset)
    out = b.scratch(f"mix-{dataset}")
    gold = folder / "test.jsonl"
    label_set = ["--label-set", str(folder / "labels.json")]
    tuned = out / "tune"
    if not (tuned / "decoding.yaml").is_file():  # --lexicon counts the training file's mentions itself
        nerft_cli("tune", "--model", run, "--no-run-decoding", *label_set, "--constrained",
                  "--lexicon", folder / "train.jsonl", "--dev", folder / "dev.jsonl", "--out", tuned)
    scores = b.evaluate(gold, out / "eval", model=run,
                        extra=["--no-run-decoding", *label_set, "--decoding", tuned / "decoding.yaml"])
    setting = json.loads((tuned / "tune.json").read_text(encoding="utf-8"))["best"]["setting"]
    return {**scores, "docs_per_s": round(len(read_jsonl(gold)) / max(scores["score_s"] or 1e-9, 1e-9), 2),
            "decoding": setting}


def distill_row(b: Bench, dataset: str, k: int, unlabeled_from: str) -> dict:
    """``nerft distill`` with the nerft-D-kK run as teacher; the unlabelled texts: the rest of D's train split
    (``unlabeled_from == dataset``) or another dataset's train texts, labels removed, at most --unlabeled-max."""
    from nerft.jsonl import write_jsonl

    teacher = nerft_run(b, dataset, k)
    out = b.scratch(f"distill-{dataset}-k{k or 'all'}")
    texts = out / "unlabeled.jsonl"
    if not texts.is_file():
        pool = read_jsonl(b.train_k(unlabeled_from, 0))
        if unlabeled_from == dataset:
            pool = pool[k:]  # the documents after the first K of the same seeded order: never the gold ones
        write_jsonl(texts, [{"id": r["id"], "text": r["text"]} for r in pool[:b.args.unlabeled_max]])
    folder = b.folder(dataset)
    nerft_cli("distill", "--model", teacher, "--unlabeled", texts, "--gold", b.train_k(dataset, k), "--dev",
              folder / "dev.jsonl", "--out", out / "crf")
    gold = folder / "test.jsonl"
    scores = b.evaluate(gold, out / "eval", model=out / "crf")
    report = json.loads((out / "crf" / "distill.json").read_text(encoding="utf-8"))
    return {**scores, "docs_per_s": round(len(read_jsonl(gold)) / max(scores["score_s"] or 1e-9, 1e-9), 1),
            "threshold": report["teacher"]["threshold"], "keep_empty": report["teacher"].get("keep_empty", True),
            "silver_kept": report["teacher"]["silver_kept"],
            "silver": report["teacher"]["silver"]}


TAGGER_RECIPE = "configs/qwen2.5-0.5b-cpu-tagger.yaml"


def tagger_run(b: Bench, dataset: str, k: int, layers: int | None = None) -> Path:
    """The tagger recipe's run (``task: tag``) on the first K documents, with the minutes the nerft rows get (its
    decoding chosen on dev at its end); ``layers``: the base model's first N layers only. Resumed like nerft_run."""
    from nerft.train.checkpoint import list_checkpoints

    run = b.work / f"tagger-{dataset}-k{k or 'all'}{f'-layers{layers}' if layers else ''}" / "run"
    metrics = run / "metrics.json"
    if not (metrics.is_file() and json.loads(metrics.read_text(encoding="utf-8"))["train"]["finished"]):
        start = ["--resume", "latest"] if run.is_dir() and list_checkpoints(run) else ["--output.overwrite"]
        folder = b.folder(dataset)
        nerft_cli("train", "--config", REPO / TAGGER_RECIPE, "--train", b.train_k(dataset, k), "--dev",
                  folder / "dev.jsonl", "--output.dir", run, *start, *budget(k),
                  *(["--tagger.layers", str(layers)] if layers else []), *b.args.train_args.split())
    return run


def tagger_row(b: Bench, dataset: str, k: int, test: str | None = None, map_labels: str | None = None,
               layers: int | None = None) -> dict:
    run = tagger_run(b, dataset, k, layers)
    gold = b.folder(test or dataset) / "test.jsonl"
    scores = b.evaluate(gold, run.parent / f"eval-{test or dataset}", model=run, map_labels=map_labels)
    return {**scores, "docs_per_s": round(len(read_jsonl(gold)) / max(scores["score_s"] or 1e-9, 1e-9), 2),
            **training_pace(run)}


def training_pace(run: Path) -> dict:
    """Optimizer steps and training examples per second of a run (its metrics.json and config.yaml)."""
    import yaml

    train = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["train"]
    optim = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["optim"]
    examples = train["steps"] * optim["batch_size"] * optim["grad_accum"] * train.get("world_size", 1)
    return {"train_steps": train["steps"], "train_examples_per_s": round(examples / max(train["train_seconds"], 1e-9), 2)}


def distill_tagger_row(b: Bench, dataset: str, k: int) -> dict:
    """``nerft distill --student tagger``: the nerft-D-kK run annotates the same unlabelled texts as the
    distill-D-kK row (its silver is reused when that row ran: the same teacher, the same answers), and a tagger
    learns from the K gold documents + the silver it keeps (the threshold by the teacher's dev F1) for the
    minutes a K row trains."""
    import shutil

    from nerft.jsonl import write_jsonl

    teacher = nerft_run(b, dataset, k)
    crf_out, out = b.scratch(f"distill-{dataset}-k{k or 'all'}"), b.scratch(f"distill-tagger-{dataset}-k{k or 'all'}")
    texts = crf_out / "unlabeled.jsonl"
    if not texts.is_file():
        pool = read_jsonl(b.train_k(dataset, 0))[k:]  # after the first K of the same seeded order: never gold
        write_jsonl(texts, [{"id": r["id"], "text": r["text"]} for r in pool[:b.args.unlabeled_max]])
    student = out / "tagger"
    silver = crf_out / "crf" / "silver.jsonl"
    if silver.is_file() and not (student / "silver.jsonl").is_file():  # the teacher's answers, annotated once
        student.mkdir(parents=True, exist_ok=True)
        for f in (silver, silver.with_name(silver.name + ".resume.json")):
            shutil.copyfile(f, student / f.name)
    folder = b.folder(dataset)
    nerft_cli("distill", "--student", "tagger", "--student-config", REPO / TAGGER_RECIPE, "--student-minutes",
              MINUTES[k], "--model", teacher, "--unlabeled", texts, "--gold", b.train_k(dataset, k), "--dev",
              folder / "dev.jsonl", "--out", student)
    gold = folder / "test.jsonl"
    scores = b.evaluate(gold, out / "eval", model=student)
    report = json.loads((student / "distill.json").read_text(encoding="utf-8"))
    return {**scores, "docs_per_s": round(len(read_jsonl(gold)) / max(scores["score_s"] or 1e-9, 1e-9), 1),
            "threshold": report["teacher"]["threshold"], "silver_kept": report["teacher"]["silver_kept"],
            "silver": report["teacher"]["silver"]}


def plan() -> dict[str, Callable[[Bench], dict]]:
    """Every row, in the order to run them."""
    rows: dict[str, Callable[[Bench], dict]] = {}
    for d in DATASETS:
        for k in KS:
            rows[f"crf-{d}-k{k or 'all'}"] = lambda b, d=d, k=k: crf_row(b, d, k)
        rows[f"lexicon-{d}"] = lambda b, d=d: lexicon_row(b, d)
    rows["ood-crf-ccfbdci-on-weibo"] = lambda b: crf_row(b, "ccfbdci", 0, "weibo", TO_CCFBDCI)
    rows["ood-crf-weibo-on-ccfbdci"] = lambda b: crf_row(b, "weibo", 0, "ccfbdci", TO_WEIBO)
    for d in ("weibo", "cluener", "ccfbdci"):
        rows[f"nerft-{d}-kall"] = lambda b, d=d: nerft_row(b, d, 0)
    rows["ood-nerft-ccfbdci-on-weibo"] = lambda b: nerft_row(b, "ccfbdci", 0, "weibo", TO_CCFBDCI)
    rows["ood-nerft-weibo-on-ccfbdci"] = lambda b: nerft_row(b, "weibo", 0, "ccfbdci", TO_WEIBO)
    for d in DATASETS:
        for k in KS[:2]:
            rows[f"nerft-{d}-k{k}"] = lambda b, d=d, k=k: nerft_row(b, d, k)
    for k in KS[:2]:
        rows[f"distill-ccfbdci-k{k}"] = lambda b, k=k: distill_row(b, "ccfbdci", k, "ccfbdci")
    rows["distill-weibo-kall"] = lambda b: distill_row(b, "weibo", 0, "ccfbdci")
    for d in MIX_ORDER:
        rows[f"mix-{d}"] = lambda b, d=d: mix_row(b, d)
    for d in ("ccfbdci", "cluener", "weibo"):
        rows[f"tagger-{d}-kall"] = lambda b, d=d: tagger_row(b, d, 0)
    rows["ood-tagger-ccfbdci-on-weibo"] = lambda b: tagger_row(b, "ccfbdci", 0, "weibo", TO_CCFBDCI)
    rows["ood-tagger-weibo-on-ccfbdci"] = lambda b: tagger_row(b, "weibo", 0, "ccfbdci", TO_WEIBO)
    for k in KS[:2]:
        rows[f"distill-tagger-ccfbdci-k{k}"] = lambda b, k=k: distill_tagger_row(b, "ccfbdci", k)
    for d in DATASETS:
        for k in KS[:2]:
            rows[f"tagger-{d}-k{k}"] = lambda b, d=d, k=k: tagger_row(b, d, k)
    rows["tagger-ccfbdci-kall-layers12"] = lambda b: tagger_row(b, "ccfbdci", 0, layers=12)
    return rows


# ------------------------------------------------------------------------------------------------------ report


def write_report(b: Bench) -> None:
    measured = []
    for name in plan():
        path = b.rows_dir / f"{name}.json"
        if path.is_file():
            measured.append(json.loads(path.read_text(encoding="utf-8")))
    md = ["## Cross-dataset table (strict micro F1 on each dataset's test file; CLUENER: its official dev file)", ""]
    for d in DATASETS:
        rows = [r for r in measured if r["dataset"] == d]
        anchors = [{"row": f"published: {name}", "f1": f1, "source": src} for ds, name, f1, src in ANCHORS if ds == d]
        if not rows and not anchors:
            continue
        md += [f"### {d}", "", "Commands:", ""] + [f"- `{r['row']}`: `{r['command']}`" for r in rows] + [""]
        cols = ["row", "precision", "recall", "f1"] + [c for c in (
            "docs_per_s", "train_docs", "train_s", "train_steps", "train_examples_per_s", "threshold", "keep_empty",
            "silver_kept", "decoding")
            if any(c in r for r in rows)]
        per_label = sorted({c for r in rows for c in r if c.startswith("f1_")})
        md += [markdown_table(rows, cols + per_label), ""]
        if anchors:
            md += ["Published figures (other splits, other models; not comparable run for run):", "",
                   markdown_table(anchors, ["row", "f1", "source"]), ""]
    md.append("ood rows: the first dataset's model on the second's test file, gold types mapped with "
              f"`--map-labels` ({TO_CCFBDCI} onto CCFBDCI; {TO_WEIBO} onto Weibo; gold types not mapped, and "
              "predicted types no gold type maps to, such as a Weibo model's .NOM answers on CCFBDCI, not scored).")
    if any(r["row"].startswith("mix") for r in measured):
        md += ["", "mix rows: one adapter trained on the three training splits together (configs/mix-ccfbdci-"
                   "cluener-weibo.yaml, 180 training minutes: the three single-dataset rows' 60 each), asked with each "
                   "dataset's label set at prediction time (--label-set); decoding: the setting nerft tune chose on "
                   "that dataset's dev."]
    write_results("cross_dataset", {"benchmark": "cross-dataset", "rows": measured}, "\n".join(md),
                  Path(b.args.results))
    if measured:
        from .charts import learning_panels

        panels, pairs = chart_data(measured)
        learning_panels(panels, list(COLUMNS.values()), Path(b.args.results) / "cross_dataset.png", pairs)


TITLES = {"ccfbdci": "CCFBDCI", "cluener": "CLUENER2020 (its dev file)", "weibo": "Weibo NER"}
CURVES = {"crf": "character CRF", "nerft": "nerft (0.5B, LoRA)", "distill": "CRF distilled from nerft",
          "tagger": "nerft tagger (0.5B, one pass)", "distill-tagger": "tagger distilled from nerft"}
POINTS = {"lexicon": "training lexicon", "mix": "one adapter for the three"}
COLUMNS = {"k100": "100", "k400": "400", "kall": "all"}  # the chart's x axis: the rows' K


def chart_data(measured: list[dict]) -> tuple[dict, dict]:
    """The table as ``charts.learning_panels`` draws it: per dataset the learning curves over K (CRF, nerft,
    distilled CRF), the lexicon and the mixture at "all", the published figures as grey lines (those within 3
    points of each other as one band); then the out-of-domain rows as pairs of bars."""
    f1 = {r["row"]: r["f1"] for r in measured}
    panels = {}
    for d in DATASETS:
        curves = {CURVES[kind]: {COLUMNS[k]: f1[f"{kind}-{d}-{k}"] for k in COLUMNS if f"{kind}-{d}-{k}" in f1}
                  for kind in CURVES if any(f"{kind}-{d}-{k}" in f1 for k in COLUMNS)}
        points = {label: {COLUMNS["kall"]: f1[f"{kind}-{d}"]} for kind, label in POINTS.items() if f"{kind}-{d}" in f1}
        clusters: list[list[tuple[str, float]]] = []  # the published figures, ascending, within 3 points of the first
        for name, value in sorted(((n, v) for ds, n, v, _ in ANCHORS if ds == d), key=lambda a: a[1]):
            if clusters and value - clusters[-1][0][1] <= 3:
                clusters[-1].append((name, value))
            else:
                clusters.append([(name, value)])
        bands = {}
        for cluster in clusters:
            low, high = cluster[0][1], cluster[-1][1]
            span = f"{low:.1f}" if high - low < 0.05 else f"{low:.1f}-{high:.1f}"
            bands[f"published: {', '.join(n for n, _ in cluster)} {span}"] = (low, high)
        if curves or points:
            panels[TITLES[d]] = {"curves": curves, "points": points, "bands": bands}
    pairs = {}
    for a, b in (("ccfbdci", "weibo"), ("weibo", "ccfbdci")):
        pair = {label: f1[f"ood-{kind}-{a}-on-{b}"] for kind, label in (("crf", "character CRF"), ("nerft", "nerft"),
                                                                         ("tagger", "nerft tagger"))
                if f"ood-{kind}-{a}-on-{b}" in f1}
        if pair:
            pairs[f"{TITLES[a]} model on {TITLES[b]}"] = pair
    return panels, pairs


def row_command(name: str, args: argparse.Namespace) -> str:
    """The command that measures row ``name`` as it was measured: the flags that shape it, where not the defaults."""
    flags = [f"--crf-iterations {args.crf_iterations}"] if name.startswith(("crf", "ood-crf")) and \
        args.crf_iterations != CRF_ITERATIONS else []
    flags += [f"--unlabeled-max {args.unlabeled_max}"] if name.startswith("distill") and args.unlabeled_max != UNLABELED_MAX \
        else []
    trains = "nerft" in name or name.startswith(("distill", "mix"))
    flags += [f"--train-args '{args.train_args}'"] if args.train_args and trains else []
    return " ".join([f"python -m benchmarks.cross_dataset --rows {name}", *flags])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="", help="comma-separated row names or prefixes (crf, nerft-weibo, ...); "
                                                   "default: every row not measured yet (in --work, or in the "
                                                   "committed table); rows named here are measured unless --work "
                                                   "has them")
    parser.add_argument("--list", action="store_true", help="print the rows in the order to run them and exit")
    parser.add_argument("--data", default="", help="prepared folders to use instead: ccfbdci=DIR,weibo=DIR,...")
    parser.add_argument("--train-args", default="", help="extra flags for nerft train (e.g. a tiny model for tests)")
    parser.add_argument("--crf-iterations", type=int, default=CRF_ITERATIONS)
    parser.add_argument("--unlabeled-max", type=int, default=UNLABELED_MAX, help="unlabelled texts per distill row")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)
    rows = plan()
    if args.list:
        print("\n".join(rows))
        return 0
    wanted = [n for n in rows if not args.rows or any(n.startswith(w) for w in args.rows.split(","))]
    b = Bench(args, tuple(wanted) if args.rows else ())
    for name in wanted:
        path = b.rows_dir / f"{name}.json"
        if path.is_file():
            log(f"{name}: measured before ({path}); skipped")
            continue
        log(f"{name}: measuring")
        result = rows[name](b)
        parts = name.split("-")
        dataset = parts[-1] if name.startswith("ood") else next(p for p in parts if p in DATASETS)  # ood: the test's
        row = {"row": name, "dataset": dataset, "command": row_command(name, args), **result}
        path.write_text(json.dumps(row, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        write_report(b)
    write_report(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
