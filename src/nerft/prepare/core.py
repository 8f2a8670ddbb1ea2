"""``nerft prepare``: read a dataset in any supported format, check it, and write seeded train/dev/test splits.

Output directory::

    OUT/
      train.jsonl, dev.jsonl, test.jsonl   canonical nerft JSONL (documents keep their input order within a split)
      labels.json                          the label set: given (--labels), a built-in matching the data, or inferred
      stats.json, stats.md                 sizes, entities per label, empty-document share, text lengths,
                                           duplicate texts, conflicting annotations, reader warnings
      entities_per_label.png               entities per label and split
      <export format>/                     with --export-format: the training conversations for LLaMA-Factory
                                           or ms-swift (see :mod:`nerft.prepare.trainer_formats`)

OUT is written under a temporary name beside it and renamed into place once complete, so an interrupted prepare
(a full disk, Ctrl-C, a kill) leaves the previous OUT or none, never a part. An existing OUT is replaced only when it
holds nothing but a previous prepare's output (its stats.json lists what it wrote), or with ``--overwrite``; never
when it holds the input.

Splitting: documents are grouped by identical text, the groups shuffled with ``seed`` and dealt to test, then dev,
then train until each reaches its share, so a repeated text never straddles two splits (very frequent texts stay in
train, see :func:`split_documents`). Texts that repeat with
different annotations are listed as conflicts (and kept). A directory with train/dev/test files is a predefined
split and is kept as it is (``--keep-split`` asks for that explicitly); a split missing from it (CLUENER ships no
labelled test file) is carved from train with the same seeded, group-aware procedure.

Labels: with ``--labels`` every entity label must be a code or display name of that set (names are mapped to
codes). An entity with another label is an error by default, naming the labels and their counts; with
``--unknown-labels drop`` such entities are removed and counted in stats.json.

Other trainers: ``--export-format llamafactory-alpaca|llamafactory-sharegpt|messages`` also writes each split as
the exact system prompt / user turn / answer triples nerft's ``train`` builds (``--export.output-format``,
``--export.prompt-style``, ``--export.describe-labels`` and ``--export.system-prompt`` mirror train's ``data.*``
options), in the split files' order, so the other trainer's predictions can be scored with ``nerft evaluate``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, add_config_arguments, build_config, opt, to_dict
from ..fileio import atomic_dir, atomic_write, write_json
from ..jsonl import write_jsonl
from ..labels import BUILTIN_LABEL_SETS, LabelSet, load_label_set
from ..readers import HUB_PREFIX, SPLITS, ReadReport, read_dataset, read_split_dir
from ..schema import Document, Entity, NerftError
from ..textio import ENCODING_HELP
from .stats import build_stats, plot_entities_per_label, stats_markdown
from .trainer_formats import SftExportConfig, write_sft_export

PLOT_FILE = "entities_per_label.png"
STATS_FILE = "stats.json"
MAX_EVAL_GROUP_SHARE = 0.01  # see split_documents


@dataclass
class PrepareConfig:
    input: str = opt("", "dataset file, split directory (train/dev/test files), or hub:qgyd2021/chinese_ner_sft:SUBSET",
                     path=True)
    out: str = opt("", "output directory for train/dev/test.jsonl, labels.json and stats", aliases=("--output",))
    format: Literal["auto", "chinese_ner_sft", "cluener", "conll", "doccano", "label-studio", "nerft", "spacy"] = opt(
        "auto", "format of --input", flag="--input-format", deprecated=("--format",))
    conll_scheme: Literal["auto", "bio", "bioes", "bmes"] = opt("auto", "tag scheme of CoNLL input")
    labels: str | None = opt(None, "label set: a built-in (ccfbdci, cluener) or a YAML/JSON file; default: a "
                                   "built-in that covers the data, else inferred from it", path=True)
    unknown_labels: Literal["error", "drop"] = opt("error", "entities whose label is not in --labels: fail, or "
                                                            "drop them and count")
    seed: int = opt(42, "seed of the shuffled split")
    dev: float = opt(0.05, "share of documents for dev", flag="--dev-share", deprecated=("--dev",))
    test: float = opt(0.1, "share of documents for test", flag="--test-share", deprecated=("--test",))
    keep_split: bool = opt(False, "keep the train/dev/test files of a split directory (implied for directories)")
    test_from: str | None = opt(None, "use this file, as it is, as the test split, and split --input (a file) into "
                                      "train and dev only (--dev-share, seeded): CLUENER, whose official dev file "
                                      "is the test set when its test labels are not public", path=True)
    skip_invalid: bool = opt(False, "skip and count bad records instead of stopping at the first")
    use_predictions: bool = opt(False, "Label Studio: read a task nobody annotated from its first prediction "
                                       "(unreviewed model output taken as gold; counted and named in the report); a "
                                       "task the annotator skipped is never read")
    reject_overlaps: bool = opt(False, "treat overlapping or nested entities as invalid records")
    plot: bool = opt(True, f"write {PLOT_FILE}")
    encoding: str = opt("utf-8", ENCODING_HELP)
    overwrite: bool = opt(False, "replace an --out folder that holds files prepare did not write (all of it)")
    export: SftExportConfig = opt(help="training conversations for another trainer", factory=SftExportConfig)

    def __post_init__(self) -> None:
        for name in ("dev", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"config key '{name}' must be in [0, 1), got {value}")
        if self.dev + self.test >= 1.0:
            raise ConfigError(f"dev + test must leave documents for train, got {self.dev} + {self.test}")


@dataclass
class PrepareReport:
    out_dir: Path
    split_sizes: dict[str, int]
    labels: LabelSet
    label_source: str
    read: ReadReport
    stats: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """A short plain-text table for the terminal."""
        rows = [("split", "docs", "entities", "no entity", "mean len")]
        for split in (*SPLITS, "all"):
            s = self.stats["splits"][split] if split != "all" else self.stats["all"]
            rows.append((split, str(s["docs"]), str(s["entities"]), f"{s['empty_share']:.1%}",
                         f"{s['text_length']['mean']:.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        read = self.read
        lines += [
            f"labels ({self.label_source}): {', '.join(self.labels.codes)}",
            f"read {read.docs} docs from {read.source} ({read.format}); skipped {read.skipped}, "
            f"repaired tags {read.repaired_tags}, overlapping pairs {read.overlaps}",
            f"duplicate texts {self.stats['duplicate_texts']}, conflicting annotations "
            f"{len(self.stats['conflicts'])}, dropped entities {sum(self.stats['dropped_entities'].values())}",
            f"wrote {self.out_dir}/ ({', '.join(str(p.relative_to(self.out_dir)) for p in self.files)})",
        ]
        if self.stats["texts_in_several_splits"]:
            lines.append(f"note: {self.stats['texts_in_several_splits']} texts occur in more than one predefined split")
        lines += [f"note: {note}" for note in self.stats.get("notes", [])]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- entry


def prepare(cfg: PrepareConfig) -> PrepareReport:
    if not cfg.input:
        raise ConfigError("missing --input (a dataset file, a split directory or hub:REPO:SUBSET)")
    if not cfg.out:
        raise ConfigError("missing --out (the output directory)")
    out = Path(cfg.out)
    check_output_folder(out, cfg)
    splits, read_report, split_mode, notes = _read_input(cfg)

    all_docs = [doc for split in SPLITS for doc in splits[split]]
    label_set, label_source = _choose_labels(cfg, all_docs)
    dropped = _apply_labels(all_docs, label_set, cfg.unknown_labels)

    stats = build_stats(splits, label_set)
    stats.update({
        "source": str(cfg.input), "format": read_report.format, "split_mode": split_mode, "seed": cfg.seed,
        "label_source": label_source, "dropped_entities": dict(dropped), "read": read_report.to_dict(),
        "notes": notes, "config": to_dict(cfg),
    })

    try:
        files = _write_output_folder(out, cfg, splits, label_set, stats)
    except OSError as exc:  # a full disk, a read-only folder: nothing of this run is left, a previous OUT is kept
        where = f" ({Path(exc.filename).name})" if exc.filename else ""
        kept = "the previous folder is unchanged" if out.is_dir() else "nothing was written"
        raise NerftError(f"cannot write {out}{where}: {exc.strerror or exc}; {kept}") from None
    return PrepareReport(out, {s: len(splits[s]) for s in SPLITS}, label_set, label_source, read_report, stats, files)


def _write_output_folder(out: Path, cfg: PrepareConfig, splits: dict[str, list[Document]], label_set: LabelSet,
                         stats: dict[str, Any]) -> list[Path]:
    """Every output file, staged beside ``out`` and renamed into place at the end; returns their final paths."""
    with atomic_dir(out) as stage:  # the folder appears (or replaces the previous one) only once complete
        files = []
        for split in SPLITS:
            write_jsonl(stage / f"{split}.jsonl", splits[split])
            files.append(stage / f"{split}.jsonl")
        write_json(stage / "labels.json", label_set.to_dict())
        with atomic_write(stage / "stats.md") as f:
            f.write(stats_markdown(stats))
        files += [stage / "labels.json", stage / "stats.md"]
        if cfg.plot:
            plot_entities_per_label(stats, stage / PLOT_FILE)
            files.append(stage / PLOT_FILE)
        files += write_sft_export(stage, splits, label_set, cfg.export)
        files.append(stage / STATS_FILE)
        stats["files"] = [str(p.relative_to(stage)) for p in files]  # what the next prepare may replace
        write_json(stage / STATS_FILE, stats)
    return [out / p.relative_to(stage) for p in files]


def check_output_folder(out: Path, cfg: PrepareConfig) -> None:
    """Refuse an --out that prepare must not replace: a file, a folder holding the input, or (without
    ``overwrite``) a folder holding anything a previous prepare did not write there."""
    for parent in out.parents:
        if parent.is_file():
            raise NerftError(f"{parent} is a file, not a folder (needed for --out {out})")
    if not out.exists():
        return
    if not out.is_dir():
        raise NerftError(f"--out {out} is a file; prepare writes a folder: pass another --out")
    source = Path(cfg.input)
    if not cfg.input.startswith(HUB_PREFIX) and source.exists() and source.resolve().is_relative_to(out.resolve()):
        raise NerftError(f"--out {out} holds the input {cfg.input}, and prepare replaces the whole folder: "
                         "pass another --out")
    if cfg.overwrite:
        return
    foreign = sorted({p.name for p in out.iterdir()} - _previous_outputs(out))
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise NerftError(f"--out {out} holds {listed}, which prepare did not write, and prepare replaces the whole "
                         "folder: pass a new or empty --out, or --overwrite to replace it anyway")


def _previous_outputs(out: Path) -> set[str]:
    """The top-level names a previous prepare wrote into ``out`` (from its stats.json); empty when it has none."""
    try:
        stats = json.loads((out / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not (isinstance(stats, dict) and {"splits", "split_mode", "labels"} <= stats.keys()):
        return set()
    files = stats.get("files") or [*(f"{s}.jsonl" for s in SPLITS), "labels.json", "stats.md", PLOT_FILE]
    return {STATS_FILE} | {Path(str(f)).parts[0] for f in files if str(f)}


def _read_input(cfg: PrepareConfig) -> tuple[dict[str, list[Document]], ReadReport, str, list[str]]:
    """Documents per split, the read report, ``random``/``predefined``, and notes on what was done."""
    options: dict[str, Any] = {"skip_invalid": cfg.skip_invalid, "reject_overlaps": cfg.reject_overlaps,
                               "conll_scheme": cfg.conll_scheme, "encoding": cfg.encoding,
                               "use_predictions": cfg.use_predictions}
    source = Path(cfg.input)
    is_dir = not cfg.input.startswith(HUB_PREFIX) and source.is_dir()
    if cfg.keep_split and not is_dir:
        raise NerftError(f"--keep-split needs a directory with train/dev/test files; {cfg.input} is not one")
    notes: list[str] = []
    if cfg.test_from:
        return _read_with_test_file(cfg, options, is_dir)
    if not is_dir:
        docs, report = read_dataset(cfg.input, cfg.format, **options)
        if not docs:
            raise NerftError(f"{cfg.input} holds no documents")
        return split_documents(docs, cfg.seed, cfg.dev, cfg.test), report, "random", notes
    given, report = read_split_dir(source, cfg.format, **options)
    splits = {split: given.get(split, []) for split in SPLITS}
    missing = [split for split in ("dev", "test") if split not in given]
    if missing:
        shares = {split: getattr(cfg, split) if split in missing else 0.0 for split in ("dev", "test")}
        carved = split_documents(splits["train"], cfg.seed, shares["dev"], shares["test"])
        splits["train"] = carved["train"]
        for split in missing:
            splits[split] = carved[split]
            notes.append(f"{source} has no {split} file: {len(carved[split])} documents "
                         f"({shares[split]:.0%} of train, seed {cfg.seed}) were carved from train")
    return splits, report, "predefined", notes


def _read_with_test_file(cfg: PrepareConfig, options: dict[str, Any], is_dir: bool
                         ) -> tuple[dict[str, list[Document]], ReadReport, str, list[str]]:
    """``--test-from``: test is that file as given; --input is split into train and dev (seeded, group-aware)."""
    if is_dir:
        raise NerftError(f"--test-from goes with a single --input file; {cfg.input} is a directory")
    docs, report = read_dataset(cfg.input, cfg.format, **options)
    test, test_report = read_dataset(cfg.test_from, cfg.format, **options)  # type: ignore[arg-type]
    report.merge(test_report)
    if not docs or not test:
        raise NerftError(f"{cfg.input if not docs else cfg.test_from} holds no documents")
    splits = split_documents(docs, cfg.seed, cfg.dev, 0.0)
    splits["test"] = test
    notes = [f"test is {cfg.test_from} as given ({len(test)} documents); dev is {len(splits['dev'])} documents "
             f"({cfg.dev:.0%} of {cfg.input}, seed {cfg.seed}) carved from it"]
    return splits, report, "test-from", notes


# ---------------------------------------------------------------------------------------------------- splitting


def split_documents(docs: list[Document], seed: int, dev: float, test: float) -> dict[str, list[Document]]:
    """Seeded, reproducible split; documents with identical text always land in the same split.

    Groups of identical texts are shuffled and dealt to test, then dev, while the group fits in the room left
    (each takes ``round(share * len(docs))`` documents); everything else is train. A text repeated more often than
    ``MAX_EVAL_GROUP_SHARE`` of an evaluation split's size is kept for train, so a filler such as "嗯。" (331 copies
    in CCFBDCI) cannot make up a fifth of a test set. Each split keeps the input order of its documents.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, doc in enumerate(docs):
        groups[doc.text].append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    targets = {"test": round(test * len(docs)), "dev": round(dev * len(docs))}
    largest = {split: max(1, int(MAX_EVAL_GROUP_SHARE * target)) for split, target in targets.items()}
    assigned: dict[str, list[int]] = {split: [] for split in SPLITS}
    for members in order:
        size = len(members)
        split = next((s for s in ("test", "dev")
                      if size <= largest[s] and len(assigned[s]) + size <= targets[s]), "train")
        assigned[split].extend(members)
    return {split: [docs[i] for i in sorted(assigned[split])] for split in SPLITS}


# ------------------------------------------------------------------------------------------------------- labels


def _choose_labels(cfg: PrepareConfig, docs: list[Document]) -> tuple[LabelSet, str]:
    if cfg.labels:
        return load_label_set(cfg.labels), f"given: {cfg.labels}"
    seen = {e.label for doc in docs for e in doc.entities}
    for name, builder in BUILTIN_LABEL_SETS.items():
        builtin = builder()
        if seen and seen <= set(builtin.codes):
            return builtin, f"built-in: {name}"
    return LabelSet.infer(sorted(seen)), "inferred from the data"


def _apply_labels(docs: list[Document], label_set: LabelSet, unknown: str) -> Counter[str]:
    """Map labels written as display names to codes; drop (and count) or reject labels outside the set."""
    unknown_counts: Counter[str] = Counter()
    for doc in docs:
        for e in doc.entities:
            if label_set.to_code(e.label) is None:
                unknown_counts[e.label] += 1
    if unknown_counts and unknown == "error":
        listed = ", ".join(f"{label!r} ({n})" for label, n in unknown_counts.most_common())
        raise NerftError(
            f"entity labels not in the label set ({', '.join(label_set.codes)}): {listed}; fix --labels, "
            "or pass --unknown-labels drop to remove those entities"
        )
    for doc in docs:
        kept = []
        for e in doc.entities:
            code = label_set.to_code(e.label)
            if code is not None:
                kept.append(e if code == e.label else Entity(e.start, e.end, code, e.text, e.score))
        doc.entities = kept
    return unknown_counts


# ---------------------------------------------------------------------------------------------------------- CLI


def register(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of prepare options; flags override it")
    add_config_arguments(parser, PrepareConfig)
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(PrepareConfig, args, config_path=args.config)
    report = prepare(cfg)
    print(report.summary())
    return 0
