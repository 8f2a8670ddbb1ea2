"""``nerft evaluate``: score a predictions file against a gold file.

Each PRED line is a JSON object with either ``entities`` (what ``nerft predict`` writes; entities without
``start``/``end`` are grounded in the gold text) or ``output`` (a raw model answer, read by ``answers.read_answer``
as ``predict`` reads it: any nerft output format, grounded in the gold text; with ``format`` set, pieces written
in another format count as parse failures). With both, ``source`` decides (``auto``: entities).

Documents are matched by ``id`` when every prediction has one, by line order when none has (then the counts must
agree); a file that mixes rows with and without ``id`` is refused, naming a line of each kind (matching it by
order would pair most rows of a shuffled file with the wrong document). A prediction that carries ``text`` must
have the gold document's text. A gold document without a prediction is an error, unless ``allow_missing`` is set:
it then scores as an empty prediction and is counted in ``missing_predictions``.

Labels: ``--labels``, else ``labels.json`` beside the gold file (a prepared folder), else the gold labels. A
predicted entity whose label is not in that set (as a code or display name) is refused, naming its line, unless
``allow_unknown_labels``: it is then scored as a label of its own (a false positive) and counted in
``unknown_labels`` ({label: entities}). Raw ``output`` answers are unaffected: the parser counts a piece with an
unknown label as a parse failure.

Other trainers' prediction files are read directly (``--pred-format``, detected by ``auto``): LLaMA-Factory's
``generated_predictions.jsonl`` (``prompt``/``predict``/``label``) and ms-swift's ``swift infer`` results
(``response``/``labels``/``messages``). They carry no ids: line k is matched to gold document k and must show it
(its prompt holds the gold text); the answer is read like an ``output`` (see :mod:`nerft.prepare.trainer_formats`).

With ``--score-with MODEL`` instead of ``--pred``, evaluate predicts the gold texts itself (``predict``'s load and
decoding flags, any backend: ``--backend openai --base-url URL`` scores a served model).

OUT (optional) gets metrics.json (the keys of :mod:`nerft.metrics`), report.md, per_label.png and report.html: one
self-contained page with the scores per label under each rule, the confusion matrix and every document with an
error, gold and predicted entities marked in its text, filterable by error kind and label (:mod:`nerft.pages.report`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .answers import read_answer
from .config import add_config_arguments, build_config, opt, to_dict
from .fileio import atomic_write, write_json
from .formats import Mention, get_format
from .grounding import ground_mentions
from .jsonl import iter_jsonl
from .labels import LabelSet, load_label_set, map_document_labels, parse_label_map
from .metrics import Scores, format_table, score_documents
from .schema import Document, Entity, InputError, NerftError, entity_from_dict
from .textio import ENCODING_HELP, require_file, resolve_encoding

if TYPE_CHECKING:
    from .inference.base import Predictor


@dataclass
class EvaluateConfig:
    gold: str = opt("", "gold documents, nerft JSONL (`nerft prepare` output)", path=True)
    pred: str = opt("", "predictions JSONL: `entities` and/or `output` (raw answer) per line", path=True)
    format: str | None = opt(None, "answer format the model was taught (tutorial, jsonl, compact): raw answers are read "
                                          "in any format, and pieces in another one count as parse failures; unset: none do",
                             flag="--answer-format", deprecated=("--format",))
    labels: str | None = opt(None, "label set: ccfbdci, cluener or a YAML/JSON file (default: labels.json beside "
                                   "the gold file, else inferred from gold)", path=True)
    out: str | None = opt(None, "directory for metrics.json, report.md, report.html (the errors in their documents) "
                                "and per_label.png", aliases=("--output",))
    source: Literal["auto", "entities", "output"] = opt("auto", "which prediction field to score when both exist")
    pred_format: Literal["auto", "nerft", "llamafactory", "swift"] = opt(
        "auto", "PRED's layout: nerft (predict's JSONL), llamafactory (generated_predictions.jsonl) or swift "
                "(swift infer's result JSONL), matched to gold by line order; auto: from the keys")
    keep_hallucinated: bool = opt(False, "count mentions that are not in the text as false positives")
    allow_missing: bool = opt(False, "score a gold document without a prediction as empty instead of failing")
    quiet: bool = opt(False, "do not print the table (the flag is nerft's --quiet)")
    allow_unknown_labels: bool = opt(False, "score predicted labels outside the label set as labels of their own "
                                            "(reported in unknown_labels) instead of failing")
    encoding: str = opt("utf-8", ENCODING_HELP)
    map_labels: str | None = opt(None, "score gold under another label set: FROM=TO pairs (PER.NAM=PER,ORG.NAM=ORG) or "
                                       "a YAML file of them; gold entities whose label is not mapped are dropped, and "
                                       "so are predicted ones of a label no gold label maps to (out of domain: a "
                                       "CCFBDCI model on Weibo's .NAM mentions, a Weibo model's .NOM answers on "
                                       "CCFBDCI)")
    score_with: str | None = opt(None, "predict the gold texts with this model (run directory, exported folder or "
                                       "adapter; any --backend, with the load and decoding flags) instead of "
                                       "reading --pred; OUT then also gets predictions.jsonl")


@dataclass
class _PredRow:
    line: int
    data: dict[str, Any]


def evaluate(cfg: EvaluateConfig, predictor: Predictor | None = None) -> dict[str, Any]:
    """Score cfg.pred (or, given a ``Predictor``, its predictions of the gold texts) against cfg.gold; write OUT
    when given; return the metrics dict."""
    if not cfg.gold or not (cfg.pred or predictor is not None):
        raise NerftError("--gold and --pred (or --score-with MODEL) are required")
    if cfg.format is not None:
        get_format(cfg.format)  # a clear error for an unknown name
    started = time.perf_counter()
    gold = read_gold(cfg.gold, cfg.encoding)
    targets = None
    if cfg.map_labels:
        mapping = parse_label_map(cfg.map_labels)
        gold, targets = map_document_labels(gold, mapping), set(mapping.values())
    model_counts = {"parse_failures": 0, "hallucinations": 0, "duplicates": 0}
    rows = _read_prediction_file(cfg, gold) if predictor is None else _predicted_rows(gold, predictor, cfg, model_counts)
    labels = predictor.labels if predictor is not None and not cfg.labels else _label_set(cfg.labels, gold, cfg.gold)
    if targets is not None and predictor is None and not cfg.labels:  # labels.json beside gold names unmapped codes
        labels = LabelSet.infer(dict.fromkeys(mapping.values()))
    matched = _match(gold, rows, cfg)
    preds, counts, unknown, unmapped = [], model_counts, Counter[str](), Counter[str]()
    for doc, row in zip(gold, matched, strict=True):
        entities = [] if row is None else _entities_of(doc, row, cfg, labels, counts, unknown)
        if targets is not None:  # a type the gold set has no counterpart of can be neither right nor wrong here
            unmapped.update(e.label for e in entities if e.label not in targets)
            entities = [e for e in entities if e.label in targets]
        preds.append(entities)
    if targets is not None:
        labels = labels.subset([c for c in labels.codes if c in targets])
    metrics = score_documents(gold, preds, labels=labels, **counts)
    if targets is not None:
        metrics["unmapped_predictions"] = dict(unmapped.most_common())
    metrics["missing_predictions"] = sum(row is None for row in matched)
    metrics["unknown_labels"] = dict(unknown.most_common())
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    if not cfg.quiet:
        print(format_table(metrics))
        if unknown:
            print(f"labels outside the label set, scored as their own: {_listed(unknown)}")
    if cfg.out:
        write_outputs(metrics, cfg, Path(cfg.out), gold, preds, labels)
    return metrics


def read_gold(path: str, encoding: str = "utf-8") -> list[Document]:
    """Any format the readers know (nerft JSONL, chinese_ner_sft, CLUENER, CoNLL); spans are checked there."""
    from .readers import read_dataset

    require_file(path, "gold file")
    gold, _report = read_dataset(path, progress=False, encoding=encoding)
    return gold


def _read_prediction_file(cfg: EvaluateConfig, gold: list[Document]) -> list[_PredRow]:
    """nerft's prediction rows, or another trainer's predictions matched to ``gold`` as ``{"id", "output"}`` rows."""
    from .prepare.trainer_formats import detect_prediction_format, read_trainer_predictions

    require_file(cfg.pred, "prediction file")
    fmt: str = cfg.pred_format
    if fmt == "auto":  # LLaMA-Factory and ms-swift write UTF-8: a file in another encoding is nerft's layout
        fmt = detect_prediction_format(cfg.pred) if resolve_encoding(cfg.pred, cfg.encoding) == "utf-8" else "nerft"
    if fmt == "nerft":
        return _read_pred_rows(cfg.pred, cfg.encoding)
    return [_PredRow(line, row) for line, row in read_trainer_predictions(cfg.pred, fmt, gold)]


def _read_pred_rows(path: str, encoding: str = "utf-8") -> list[_PredRow]:
    require_file(path, "prediction file")
    rows = []
    for line, obj in iter_jsonl(path, encoding=encoding):
        if not isinstance(obj, dict):
            raise InputError(path, line, f"expected a JSON object, got {type(obj).__name__}")
        if "entities" not in obj and "output" not in obj:
            raise InputError(path, line, "a prediction needs `entities` or `output` (the raw model answer)")
        if "entities" in obj and not isinstance(obj["entities"], list):
            raise InputError(path, line, "`entities` must be a list")
        if "output" in obj and not isinstance(obj["output"], str):
            raise InputError(path, line, "`output` must be a string")
        rows.append(_PredRow(line, obj))
    return rows


def _predicted_rows(gold: list[Document], predictor: Predictor, cfg: EvaluateConfig,
                    counts: dict[str, int]) -> list[_PredRow]:
    """``predictor``'s rows for the gold texts, as ``nerft predict`` writes them; the answers' parse failures and
    dropped hallucinations go into ``counts`` (the rows no longer show them). With OUT, also predictions.jsonl."""
    from .jsonl import write_jsonl

    predictions = predictor.predict_detailed([d.text for d in gold])
    rows = []
    for k, (doc, p) in enumerate(zip(gold, predictions, strict=True)):
        rows.append(_PredRow(k + 1, {"id": doc.id, "text": doc.text, "entities": [e.to_dict() for e in p.entities]}))
        counts["parse_failures"] += p.parse_failures
        counts["hallucinations"] += 0 if cfg.keep_hallucinated else p.hallucinated  # kept ones are false positives
    if cfg.out:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        write_jsonl(Path(cfg.out) / "predictions.jsonl", [r.data for r in rows])
    return rows


def _label_set(spec: str | None, gold: list[Document], gold_path: str) -> LabelSet:
    if spec:
        return load_label_set(spec)
    beside = Path(gold_path).parent / "labels.json"  # a prepared folder's label set
    if beside.is_file():
        return LabelSet.from_file(beside)
    codes = [e.label for d in gold for e in d.entities]
    if not codes:
        raise NerftError("the gold file has no entities to infer the label set from; pass --labels")
    return LabelSet.infer(codes)


def _match(gold: list[Document], rows: list[_PredRow], cfg: EvaluateConfig) -> list[_PredRow | None]:
    """The prediction row for each gold document (None: missing)."""
    with_id = next((r for r in rows if "id" in r.data), None)
    without_id = next((r for r in rows if "id" not in r.data), None)
    if with_id is not None and without_id is not None:
        raise InputError(cfg.pred, without_id.line, f"this prediction has no `id`, but line {with_id.line} has one; "
                         "give every line an id (matched by id) or none (matched by line order)")
    gold_ids = [d.id for d in gold]
    by_id = len(set(gold_ids)) == len(gold_ids) and with_id is not None
    matched: list[_PredRow | None]
    r: _PredRow | None
    if by_id:
        index = {doc_id: i for i, doc_id in enumerate(gold_ids)}
        matched = [None] * len(gold)
        for r in rows:
            doc_id = str(r.data["id"])
            if doc_id not in index:
                raise InputError(cfg.pred, r.line, f"id {doc_id!r} is not in the gold file {cfg.gold}")
            if matched[index[doc_id]] is not None:
                raise InputError(cfg.pred, r.line, f"a second prediction for id {doc_id!r} "
                                 f"(the first is on line {matched[index[doc_id]].line})")  # type: ignore[union-attr]
            matched[index[doc_id]] = r
    else:
        if len(rows) > len(gold):
            raise InputError(cfg.pred, rows[len(gold)].line,
                             f"more predictions ({len(rows)}) than gold documents ({len(gold)}); lines are matched "
                             "by order because the predictions have no ids")
        matched = [*rows, *[None] * (len(gold) - len(rows))]
    for doc, r in zip(gold, matched, strict=True):
        if r is not None and "text" in r.data and r.data["text"] != doc.text:
            raise InputError(cfg.pred, r.line, f"its text {_short(r.data['text'])} differs from the gold document "
                             f"it is matched with (id {doc.id!r}: {_short(doc.text)})")
    missing = [doc.id for doc, r in zip(gold, matched, strict=True) if r is None]
    if missing and not cfg.allow_missing:
        how = "by id" if by_id else "by line order"
        raise NerftError(f"{cfg.pred}: no prediction for {len(missing)} of {len(gold)} gold documents (matched {how}; "
                         f"first missing id {missing[0]!r}); pass --allow-missing to score them as empty")
    return matched


def _listed(counts: Counter[str]) -> str:
    return ", ".join(f"{label!r} ({n})" for label, n in counts.most_common())


def _short(text: Any) -> str:
    text = str(text)
    return repr(text if len(text) <= 30 else text[:30] + "…")


def _entities_of(doc: Document, row: _PredRow, cfg: EvaluateConfig, labels: LabelSet,
                 counts: dict[str, int], unknown: Counter[str]) -> list[Entity]:
    use_output = "output" in row.data and (cfg.source == "output" or "entities" not in row.data)
    if cfg.source == "entities" and "entities" not in row.data:
        raise InputError(cfg.pred, row.line, "no `entities` (source is `entities`)")
    if use_output:
        reading = read_answer(doc.text, row.data["output"], labels, output_format=cfg.format,
                              keep_hallucinated=cfg.keep_hallucinated)
        counts["parse_failures"] += not reading.parse_ok
        counts["hallucinations"] += 0 if cfg.keep_hallucinated else reading.hallucinated
        counts["duplicates"] += reading.duplicates
        return reading.entities
    entities = [entity_from_dict(e, path=cfg.pred, line=row.line) for e in row.data["entities"]]
    outside = [e.label for e in entities if labels.to_code(e.label) is None]
    if outside and not cfg.allow_unknown_labels:
        raise InputError(cfg.pred, row.line, f"label {outside[0]!r} is not in the label set "
                         f"({', '.join(labels.codes)}); pass the model's --labels, or --allow-unknown-labels to "
                         "score it as a label of its own")
    unknown.update(outside)
    entities = [Entity(e.start, e.end, labels.to_code(e.label) or e.label, e.text, e.score) for e in entities]
    placed = [e for e in entities if e.start is not None and e.end is not None]
    problems = _span_problems(doc.text, placed)
    if problems:
        raise InputError(cfg.pred, row.line, f"{problems[0]} (gold id {doc.id!r})")
    unplaced = [e for e in entities if e.start is None or e.end is None]
    if not unplaced:
        return entities
    grounding = ground_mentions(doc.text, [Mention(e.text, e.label) for e in unplaced],
                                keep_hallucinated=cfg.keep_hallucinated)
    counts["hallucinations"] += 0 if cfg.keep_hallucinated else len(grounding.hallucinated)
    counts["duplicates"] += len(grounding.duplicates)
    return placed + grounding.entities


def _span_problems(text: str, entities: list[Entity]) -> list[str]:
    out = []
    for e in entities:
        if e.start is None or e.end is None:
            continue
        if not 0 <= e.start < e.end <= len(text):
            out.append(f"entity {e.text!r} [{e.start}, {e.end}) is not a span of the text (length {len(text)})")
        elif text[e.start : e.end] != e.text:
            out.append(f"entity {e.text!r} does not match text[{e.start}:{e.end}] = {text[e.start : e.end]!r}")
    return out


def write_outputs(metrics: dict[str, Any], cfg: EvaluateConfig, out: Path, gold: list[Document],
                  preds: list[list[Entity]], labels: LabelSet) -> None:
    """metrics.json, report.md, report.html and per_label.png in ``out``; each written atomically."""
    from .pages.report import report_page
    from .plots import bar_chart_per_label

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    bar_chart_per_label(metrics, out / "per_label.png")
    with atomic_write(out / "report.md") as f:
        f.write(report_markdown(metrics, cfg))
    sources = {"gold": cfg.gold, "predictions": cfg.pred or f"{cfg.score_with} (--score-with)"}
    with atomic_write(out / "report.html") as f:
        f.write(report_page(gold, preds, metrics, labels, sources))


def report_markdown(metrics: dict[str, Any], cfg: EvaluateConfig) -> str:
    labels = sorted({g for g in metrics["confusion"]} | {p for row in metrics["confusion"].values() for p in row})
    lines = [
        "# nerft evaluate", "",
        f"- gold: `{cfg.gold}`", f"- predictions: `{cfg.pred or f'{cfg.score_with} (--score-with)'}`",
        f"- documents: {metrics['documents']} ({metrics['documents_with_errors']} with an error, "
        f"{metrics['missing_predictions']} without a prediction); each error in its document: "
        "[report.html](report.html)",
        *([f"- labels outside the label set, scored as their own: {_listed(Counter(metrics['unknown_labels']))}"]
          if metrics.get("unknown_labels") else []),
        *([f"- gold labels mapped by `--map-labels {cfg.map_labels}`; predictions of a label no gold label maps to, "
           f"not scored: {_listed(Counter(metrics['unmapped_predictions'])) or 'none'}"] if cfg.map_labels else []), "",
        "## Strict scores (exact span and label)", "", format_table(metrics), "",
        "![per-label scores](per_label.png)", "",
    ]
    if labels:
        lines += ["## Label confusion (spans whose boundaries match; rows: gold, columns: predicted)", "",
                  "| gold \\ pred | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for g in labels:
            row = metrics["confusion"].get(g, {})
            lines.append(f"| {g} | " + " | ".join(str(row.get(p, 0)) for p in labels) + " |")
        lines.append("")
    lines += ["## Config", "", "```yaml", *(f"{k}: {v}" for k, v in to_dict(cfg).items()), "```", ""]
    return "\n".join(lines)


def register(subparsers: Any, name: str = "evaluate", summary: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of evaluate options; flags override it")
    add_config_arguments(parser, EvaluateConfig, skip={"quiet"})  # nerft --quiet sets it (nerft.cli)
    _add_model_arguments(parser)
    parser.set_defaults(func=_run)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The load and decoding flags of ``--score-with`` (``predict``'s, without --model and --keep-hallucinated)."""
    from .inference.options import PredictOptions, add_load_arguments

    add_load_arguments(parser, skip={"model"})
    parser.add_argument("--decoding", metavar="FILE.yaml",
                        help="--score-with: decoding options from a YAML file such as the decoding.yaml nerft tune "
                             "writes (predict's --config), over the run's own; the flags below override it")
    add_config_arguments(parser, PredictOptions, skip={"keep_hallucinated"})


def _open_scoring_model(cfg: EvaluateConfig, args: argparse.Namespace):
    from .inference.loading import open_predictor
    from .inference.location import decoding_options
    from .inference.options import LoadOptions

    load = build_config(LoadOptions, args)
    load.model = cfg.score_with
    # the run's decoding.yaml, under --decoding's file, under the flags
    options = decoding_options(load, args, config_path=getattr(args, "decoding", None))
    options.keep_hallucinated = cfg.keep_hallucinated
    return open_predictor(load, options)


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(EvaluateConfig, args, config_path=args.config)
    if cfg.score_with and cfg.pred:
        raise NerftError("pass --pred (a predictions file) or --score-with (a model to predict with), not both")
    if getattr(args, "decoding", None) and not cfg.score_with:
        raise NerftError("--decoding sets how --score-with's model decodes; --pred answers are already decoded")
    metrics = evaluate(cfg, _open_scoring_model(cfg, args) if cfg.score_with else None)
    if cfg.out:
        logging.getLogger("nerft.evaluate").info(f"wrote {Path(cfg.out) / 'metrics.json'}, report.md, report.html, "
                                                 f"per_label.png ({metrics['seconds']:.2f}s)")
    return 0


class _ScoringModule(types.ModuleType):
    """``nerft.evaluate`` is both this module and the public scoring function (issue 42): a Python import of the
    module (every CLI command makes one) would otherwise replace the package attribute ``nerft.evaluate`` with the
    module, and ``nerft.evaluate(gold, predictions)`` would stop working depending on what was imported first."""

    def __call__(self, gold: Sequence[Document], predictions: Sequence[Document | Sequence[Entity]],
                 labels: Sequence[str] | None = None) -> Scores:
        from .metrics import typed_scores

        return typed_scores(gold, predictions, labels)


sys.modules[__name__].__class__ = _ScoringModule
