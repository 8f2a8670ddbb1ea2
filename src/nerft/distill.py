"""``nerft distill``: a fine-tuned LLM annotates unlabelled text, and a student learns from gold + silver: a
character CRF (``--student crf``, the default) or the LLM as a tagger (``--student tagger``).

    nerft distill --model RUN --unlabeled TEXTS --gold TRAIN.jsonl --dev DEV.jsonl --out DIR
    nerft distill --student tagger --student-config configs/qwen2.5-0.5b-cpu-tagger.yaml --model RUN ... --out DIR

Steps, each resumable (run the same command again after an interruption):

1. the teacher (``--model``, opened by the normal factory: any backend, the run's decoding) annotates ``--dev``
   into ``DIR/teacher_dev.jsonl`` (``--choose-by teacher`` only) and ``--unlabeled`` (.txt, one text a line, or .jsonl) into
   ``DIR/silver.jsonl`` through ``predict.files.predict_file``, which skips the documents already written;
2. which silver documents to keep is chosen on dev (below);
3. the CRF (``nerft.crf``) is trained on the gold documents + the kept silver ones into ``DIR/crf.crfsuite``;
   a tagger student is ``nerft train --task tag`` on them (``DIR/student-train.jsonl``) with DIR as its run
   directory (the teacher's base model unless ``--student-config`` names another; resumed from its checkpoint
   after an interruption), its nerft.json then recording the teacher as a CRF's does;
4. ``DIR/nerft.json`` says what the folder is (``kind: crf``, the label set, the teacher: its folder, name, the
   threshold and the silver counts) and ``DIR/distill.json`` holds the whole report (the threshold table too).

``nerft predict --model DIR``, ``serve --model DIR`` and ``evaluate --score-with DIR`` then load the CRF like any
run (``inference.crf_backend``), or the tagger (``inference.tagger_backend``), with offsets, scores and the same
output formats.

The filter is per DOCUMENT: a silver document is kept when every entity the teacher found in it scores at least t,
and a document where the teacher found nothing is kept or not as chosen. Dropping single low-scoring entities
instead would leave their characters tagged O in a document the CRF trains on: a false "not an entity" lesson for
exactly the mentions the teacher found hard (and a teacher that misses mentions teaches the same lesson through
its empty documents, hence the second choice).

Choosing on dev, ``--choose-by student`` (a CRF student's default): for each candidate t (``--thresholds``) with the empty
documents kept and left out, a CRF is trained on gold + that silver and scored on dev (strict F1); the best
candidate's CRF is the result (ties: the lower t, then keeping the empty documents: more silver). It costs one CRF
training per candidate (seconds with a few thousand documents, minutes with tens of thousands), and is resumable:
each candidate's model and dev score are kept under ``DIR/choice/`` until the choice is made. ``--choose-by
teacher`` (cheaper, a proxy): the teacher's strict F1 on the dev documents that pass t, the highest among the
candidates keeping at least ``--min-keep`` of dev; empty documents kept. ``--threshold X`` fixes t (empty
documents kept unless ``--drop-empty``). A tagger student would take minutes per candidate: its default, ``--choose-by
crf``, lets the candidates' CRFs choose the silver (as ``student`` does for a CRF) and the tagger then learns from
that silver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import add_config_arguments, build_config, load_yaml, opt, to_dict
from .fileio import check_output_apart, write_json
from .jsonl import read_documents
from .metrics import score_documents
from .schema import SCORE_DIGITS, Document, NerftError

SILVER_FILE = "silver.jsonl"
TEACHER_DEV_FILE = "teacher_dev.jsonl"
REPORT_FILE = "distill.json"
CHOICE_DIR = "choice"  # the candidates' CRFs while --choose-by student compares them
DEFAULT_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


@dataclass
class DistillConfig:
    model: str = opt("", "the teacher: a run directory (or exported folder) that predict can open", path=True)
    unlabeled: str = opt("", "unlabelled texts for the teacher to annotate: .txt (one a line) or .jsonl (text, id)",
                         path=True)
    gold: str = opt("", "gold training documents (nerft JSONL, e.g. prepare's train.jsonl)", path=True)
    dev: str | None = opt(None, "gold dev documents (nerft JSONL) to choose the threshold on; without it, "
                                "--threshold must be given", path=True)
    out: str = opt("", "output folder: the CRF model and the files it was made from")
    threshold: float | None = opt(None, "keep silver documents whose every entity scores at least this; default: "
                                        "chosen on --dev")
    thresholds: list[float] = opt(help="candidate thresholds tried on dev", factory=lambda: list(DEFAULT_THRESHOLDS))
    student: Literal["crf", "tagger"] = opt("crf", "what learns from gold + silver: crf (a character CRF, seconds to "
                                                 "minutes) or tagger (the LLM as a tagger, nerft train --task tag on "
                                                 "the teacher's base model unless --student-config names another)")
    student_config: str | None = opt(None, "--student tagger: its training recipe (YAML, e.g. "
                                           "configs/qwen2.5-0.5b-cpu-tagger.yaml); distill sets its data and output, "
                                           "and its base model is the teacher's unless the recipe names one",
                                     path=True)
    student_minutes: float | None = opt(None, "--student tagger: training minutes (default: the recipe's)")
    choose_by: Literal["student", "crf", "teacher"] | None = opt(
        None, "student: train the student for each candidate and keep the one with the best dev F1 (the default "
              "for a CRF student); crf: a CRF for each candidate chooses the silver, which the student then learns "
              "from (the default for a tagger, whose training takes minutes per candidate; a CRF takes seconds); "
              "teacher: the teacher's dev F1 on the documents a threshold keeps (cheapest, a proxy)")
    drop_empty: bool = opt(False, "with --threshold: leave out the silver documents where the teacher found nothing")
    min_keep: float = opt(0.5, "--choose-by teacher: a candidate threshold must keep at least this share of dev")
    max_unlabeled: int | None = opt(None, "use only the first N unlabelled texts")
    encoding: str = opt("utf-8", "the encoding of --unlabeled: a codec name, or auto (detected: UTF-8 with or "
                                 "without BOM, UTF-16 with BOM, GB18030), as predict --encoding")
    iterations: int = opt(100, "L-BFGS iterations of the CRF")
    chunk_size: int = opt(32, "texts per prediction chunk (what an interruption can lose)")


# ------------------------------------------------------------------------------------------- threshold choice


def passes(doc: Document, threshold: float, keep_empty: bool = True) -> bool:
    """Every entity scores at least ``threshold`` (at the digits scores are written with); an entity without a
    score (a backend that returns none) passes only the threshold 0. A document without entities passes when
    ``keep_empty``."""
    if not doc.entities:
        return keep_empty
    if threshold <= 0:
        return True
    return all(e.score is not None and round(e.score, SCORE_DIGITS) >= threshold for e in doc.entities)


def threshold_table(gold: list[Document], teacher: list[Document], candidates: list[float]) -> list[dict[str, Any]]:
    """For each candidate: the share of dev documents it keeps and the teacher's strict P/R/F1 on them."""
    if [d.text for d in gold] != [d.text for d in teacher]:
        raise NerftError("the teacher's dev predictions do not match the dev documents (another --dev?)")
    rows = []
    for t in sorted(set(candidates)):
        kept = [i for i, doc in enumerate(teacher) if passes(doc, t)]
        scores = (score_documents([gold[i] for i in kept], [teacher[i] for i in kept])["strict"]["micro"]
                  if kept else None)
        rows.append({"threshold": t, "kept": len(kept), "kept_share": round(len(kept) / max(len(gold), 1), 4),
                     "precision": scores["precision"] if scores else 0.0,
                     "recall": scores["recall"] if scores else 0.0, "f1": scores["f1"] if scores else 0.0})
    return rows


def choose_threshold(rows: list[dict[str, Any]], min_keep: float) -> dict[str, Any]:
    """The row with the highest F1 among those keeping at least ``min_keep`` (ties: the lowest threshold)."""
    eligible = [r for r in rows if r["kept_share"] >= min_keep] or [min(rows, key=lambda r: r["threshold"])]
    return max(eligible, key=lambda r: (round(r["f1"], 6), -r["threshold"]))


def student_table(gold: list[Document], silver: list[Document], dev: list[Document], cfg: DistillConfig,
                  folder: Path, progress: bool | None = None) -> list[dict[str, Any]]:
    """For each candidate (threshold x empty documents kept or not): a CRF trained on gold + the silver it keeps,
    written to ``folder/<candidate>.crfsuite``, and its strict P/R/F1 on ``dev``. A candidate already trained with
    the same documents (``folder/<candidate>.json``) is read back, not trained again; a candidate that keeps the
    same silver documents as a lower threshold (no teacher score between the two) shares that one's CRF and row."""
    from .crf import CrfTagger, train_crf
    from .progress import progress as progress_of

    candidates = [(t, empty) for t in sorted(set(cfg.thresholds)) for empty in (True, False)]
    rows = []
    by_kept: dict[tuple[int, ...], dict[str, Any]] = {}  # the kept silver (indices) -> the row trained on it
    with progress_of(len(candidates), "choose", unit="CRF", show=progress) as bar:
        for t, empty in candidates:
            name = f"t{t:g}-{'with' if empty else 'without'}-empty"
            kept_at = tuple(i for i, d in enumerate(silver) if passes(d, t, empty))
            kept = [silver[i] for i in kept_at]
            key = {"threshold": t, "keep_empty": empty, "gold": len(gold), "silver_kept": len(kept),
                   "iterations": cfg.iterations}
            record, model = folder / f"{name}.json", folder / f"{name}.crfsuite"
            row: dict[str, Any] | None
            if kept_at in by_kept:  # the same silver as a lower threshold: its CRF and scores
                row = {**by_kept[kept_at], "threshold": t, "keep_empty": empty}
            else:
                row = _read_row(record, key) if model.is_file() else None
            if row is None:
                trained = train_crf([*gold, *kept], model, cfg.iterations)
                tagger = CrfTagger(model)
                scores = score_documents(dev, [Document(d.id, d.text, tagger.tag(d.text)) for d in dev])
                micro = scores["strict"]["micro"]
                row = {**key, "silver_entities_kept": sum(len(d.entities) for d in kept),
                       "precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1"],
                       "model": model.name, "crf": trained}
                write_json(record, row)
            by_kept.setdefault(kept_at, row)
            rows.append(row)
            bar.update()
    return rows


def _read_row(record: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        row = json.loads(record.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return row if all(row.get(k) == v for k, v in key.items()) else None


def choose_student(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with the best dev F1 (ties: the lower threshold, then keeping the empty documents)."""
    return max(rows, key=lambda r: (round(r["f1"], 6), -r["threshold"], r["keep_empty"]))


# ------------------------------------------------------------------------------------------------------ entry


def distill(cfg: DistillConfig, predictor: Any = None, progress: bool | None = None) -> dict[str, Any]:
    """Run every step (see the module docstring); returns the report written to ``DIR/distill.json``.
    ``predictor``: the teacher, already open (default: opened from ``cfg.model`` with its run's decoding)."""
    from .crf import require_crfsuite, train_crf
    from .inference.crf_backend import CRF_MODEL_FILE
    from .predict.files import predict_file
    from .rundir import RunInfo

    _check(cfg)
    choose_by = cfg.choose_by or ("student" if cfg.student == "crf" else "crf")
    if cfg.student == "crf" or (choose_by == "crf" and cfg.threshold is None):
        require_crfsuite()  # before an hour of annotation, not after
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if predictor is None:
        predictor = _open_teacher(cfg.model)
    gold = read_documents(cfg.gold)
    _check_inputs(cfg, gold, predictor.labels)  # before an hour of annotation, not after
    unlabeled, encoding = _limited_input(cfg, out)
    stamp = {"teacher": str(Path(cfg.model).resolve())}  # resuming with another teacher is refused
    started = time.perf_counter()
    predict_file(predictor, unlabeled, out / SILVER_FILE, chunk_size=cfg.chunk_size, progress=progress, stamp=stamp,
                 encoding=encoding)
    annotate_s = time.perf_counter() - started

    silver = read_documents(out / SILVER_FILE)
    choice: dict[str, Any] = {"threshold": cfg.threshold, "keep_empty": not cfg.drop_empty,
                              "chosen_on": "given (--threshold)"}
    table: list[dict[str, Any]] = []
    trained: dict[str, Any] | None = None
    if cfg.dev and cfg.threshold is None and choose_by in ("student", "crf"):  # a CRF per candidate (seconds)
        dev = read_documents(cfg.dev)
        table = student_table(gold, silver, dev, cfg, out / CHOICE_DIR, progress)
        choice = {**choose_student(table), "chosen_on": f"dev ({cfg.dev}), by the CRF's F1"}
        crf, model = choice.pop("crf"), choice.pop("model")
        if cfg.student == "crf":  # the chosen candidate's CRF is the result
            trained = crf
            os.replace(out / CHOICE_DIR / model, out / CRF_MODEL_FILE)
        shutil.rmtree(out / CHOICE_DIR)
    elif cfg.dev:
        dev = read_documents(cfg.dev)
        predict_file(predictor, _as_inputs(dev, out / "dev_inputs.jsonl"), out / TEACHER_DEV_FILE,
                     chunk_size=cfg.chunk_size, progress=progress, stamp=stamp)
        table = threshold_table(dev, _in_order(read_documents(out / TEACHER_DEV_FILE), dev), cfg.thresholds)
        if cfg.threshold is None:
            choice = {**choose_threshold(table, cfg.min_keep), "keep_empty": True,
                      "chosen_on": f"dev ({cfg.dev}), by the teacher's F1"}
    threshold, keep_empty = float(choice["threshold"]), bool(choice["keep_empty"])
    kept = [d for d in silver if passes(d, threshold, keep_empty)]
    if cfg.student == "tagger":
        trained = train_tagger_student(cfg, [*gold, *kept], predictor, out)
    elif trained is None:
        trained = train_crf([*gold, *kept], out / CRF_MODEL_FILE, cfg.iterations)

    teacher_labels, teacher_prompt = predictor.labels, predictor.prompt
    counts = {"gold": len(gold), "silver": len(silver), "silver_kept": len(kept),
              "silver_entities_kept": sum(len(d.entities) for d in kept)}
    teacher = {"model": str(Path(cfg.model).resolve()) if cfg.model else None, "name": predictor.name,
               "threshold": threshold, "keep_empty": keep_empty,
               "filter": "document: every entity's score >= threshold"
                         + ("" if keep_empty else "; documents without entities left out"),
               "chosen_on": choice["chosen_on"], "unlabeled": str(Path(cfg.unlabeled).resolve()), **counts}
    if cfg.student == "tagger":  # the student's own run record, with where its silver came from
        info = RunInfo.load(out)
        info.teacher = teacher
        info.save(out)
    else:
        RunInfo(None, teacher_labels, teacher_prompt, kind="crf", teacher=teacher).save(out)
    report = {"teacher": teacher, "choice": choice, "candidates": table, cfg.student: trained,
              "annotate_s": round(annotate_s, 2), "config": to_dict(cfg)}
    write_json(out / REPORT_FILE, report)
    return report


STUDENT_TRAIN_FILE, STUDENT_LABELS_FILE = "student-train.jsonl", "student-labels.json"


def train_tagger_student(cfg: DistillConfig, docs: list[Document], teacher: Any, out: Path) -> dict[str, Any]:
    """``nerft train --task tag`` on ``docs`` (gold + the kept silver) into ``out``, which becomes a tagger run
    (predict, serve and evaluate --score-with open it like any run); resumed from its checkpoint when a run was
    stopped, skipped when it finished on the same documents. Returns the training summary (metrics.json)."""
    from .jsonl import write_jsonl
    from .modeling import ModelConfig
    from .train import TrainConfig, train

    train_file, labels_file = out / STUDENT_TRAIN_FILE, out / STUDENT_LABELS_FILE
    write_jsonl(train_file, docs)
    write_json(labels_file, teacher.labels.to_dict())
    recipe = build_config(TrainConfig, config_path=cfg.student_config) if cfg.student_config else TrainConfig()
    recipe.task = "tag"
    given = load_yaml(cfg.student_config) if cfg.student_config else {}
    if not (given.get("model") or {}).get("name_or_path"):  # the teacher's own base model
        from .inference.location import locate_model
        from .inference.options import LoadOptions

        weights = locate_model(LoadOptions(model=cfg.model)).weights
        recipe.model = ModelConfig(name_or_path=weights.name_or_path, revision=weights.revision)
    recipe.data.train, recipe.data.dev, recipe.data.test = str(train_file), cfg.dev, None
    recipe.data.labels, recipe.data.mixture = str(labels_file), []
    if cfg.student_minutes is not None:
        recipe.optim.max_minutes = cfg.student_minutes
    recipe.output.dir = str(out)
    metrics_file = out / "metrics.json"
    stamp = {"documents": len(docs), "entities": sum(len(d.entities) for d in docs)}  # what the run trains on
    same = _read_row(out / "student.json", stamp) is not None
    if same and metrics_file.is_file() and json.loads(metrics_file.read_text("utf-8"))["train"].get("finished"):
        return json.loads(metrics_file.read_text("utf-8"))
    resume = same and (out / "checkpoints").is_dir()  # a run stopped part-way on the same documents
    recipe.resume, recipe.output.overwrite = ("latest", False) if resume else (None, True)
    write_json(out / "student.json", stamp)
    train(recipe)
    return json.loads(metrics_file.read_text("utf-8"))


def _check_inputs(cfg: DistillConfig, gold: list[Document], labels: Any) -> None:
    """Gold (and dev) labels the teacher knows, and at least one unlabelled text: a student of gold alone, or one
    that learns a label its teacher never writes, is not what distill is asked for."""
    from .predict.files import read_inputs

    for flag, path, docs in (("--gold", cfg.gold, gold), ("--dev", cfg.dev, read_documents(cfg.dev) if cfg.dev
                                                                            else [])):
        unknown = sorted({e.label for d in docs for e in d.entities} - set(labels.codes))
        if unknown:
            raise NerftError(f"{flag} {path}: label(s) {', '.join(unknown)} are not among the teacher's "
                             f"({', '.join(labels.codes)}); the silver can never hold them: pass gold of the "
                             "teacher's label set")
    if not read_inputs(cfg.unlabeled, cfg.encoding):
        raise NerftError(f"--unlabeled {cfg.unlabeled} holds no text: the student would learn from the gold alone "
                         "(train it with nerft train instead, or pass texts to annotate)")


def _check(cfg: DistillConfig) -> None:
    for name in ("model", "unlabeled", "gold", "out"):
        if not getattr(cfg, name):
            raise NerftError(f"missing --{name}")
    if cfg.dev is None and cfg.threshold is None:
        raise NerftError("pass --dev DEV.jsonl (the threshold is chosen on it) or --threshold X")
    if not 0.0 <= cfg.min_keep <= 1.0:
        raise NerftError(f"--min-keep must be in [0, 1], got {cfg.min_keep}")
    if not cfg.thresholds:
        raise NerftError("--thresholds needs at least one value")
    check_output_apart(cfg.out, [cfg.model, cfg.unlabeled, cfg.gold, cfg.dev, cfg.student_config])
    if cfg.student == "tagger" and cfg.choose_by == "student" and cfg.threshold is None:
        raise NerftError("--choose-by student would train a tagger for every candidate threshold; use --choose-by "
                         "crf (the default), teacher, or --threshold X with --student tagger")


def _open_teacher(model: str, args: argparse.Namespace | None = None):
    """The teacher as ``nerft predict --model`` opens it: the load flags given (``--backend``, ``--device``, ...)
    and the run's decoding.yaml."""
    from .inference.loading import open_predictor
    from .inference.location import decoding_options
    from .inference.options import LoadOptions

    load = build_config(LoadOptions, args) if args is not None else LoadOptions()
    load.model = model
    return open_predictor(load, decoding_options(load))


def _limited_input(cfg: DistillConfig, out: Path) -> tuple[Path, str]:
    """The unlabelled file and its encoding, or its first ``max_unlabeled`` texts as DIR/unlabeled.jsonl (same
    ids; UTF-8)."""
    if cfg.max_unlabeled is None:
        return Path(cfg.unlabeled), cfg.encoding
    from .jsonl import write_jsonl
    from .predict.files import read_inputs

    rows = read_inputs(cfg.unlabeled, cfg.encoding)[:cfg.max_unlabeled]
    target = out / "unlabeled.jsonl"
    write_jsonl(target, [{"id": i, "text": t} for i, t in rows])
    return target, "utf-8"


def _as_inputs(docs: list[Document], path: Path) -> Path:
    from .jsonl import write_jsonl

    write_jsonl(path, [{"id": str(k), "text": d.text} for k, d in enumerate(docs)])
    return path


def _in_order(predicted: list[Document], gold: list[Document]) -> list[Document]:
    by_id = {d.id: d for d in predicted}
    missing = [str(k) for k in range(len(gold)) if str(k) not in by_id]
    if missing:
        raise NerftError(f"{TEACHER_DEV_FILE} lacks {len(missing)} dev documents; run distill again to finish it")
    return [by_id[str(k)] for k in range(len(gold))]


# ---------------------------------------------------------------------------------------------------------- CLI


def register(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of distill options; flags override it")
    add_config_arguments(parser, DistillConfig)
    from .inference.options import add_load_arguments

    add_load_arguments(parser, skip={"model"})  # the teacher's backend, device, dtype, ...
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(DistillConfig, args, config_path=args.config)
    if not cfg.model:
        raise NerftError("missing --model (the teacher)")
    report = distill(cfg, _open_teacher(cfg.model, args))  # progress bars as the global flags say
    t = report["teacher"]
    student = (f"CRF trained on {report['crf']['train_docs']} documents in {report['crf']['train_s']:.0f} s"
               if cfg.student == "crf" else
               f"tagger trained on {t['gold'] + t['silver_kept']} documents, {report['tagger']['train']['steps']} "
               f"steps in {report['tagger']['train']['train_seconds'] / 60:.1f} minutes")
    print(f"teacher {t['name']}: {t['silver']} silver documents, {t['silver_kept']} kept at threshold "
          f"{t['threshold']}{'' if t['keep_empty'] else ', those without entities left out'} ({t['chosen_on']}); "
          f"{student} -> {cfg.out}")
    return 0
