"""What B3 and the learning curve share: the seeded-shuffled train split, answering a test file with nerft, the
tutorial's predict() or jieba (each in a fresh process, writing a predictions JSONL: id, text, entities, output),
choosing the decoding on dev (``nerft tune``), scoring with ``nerft evaluate``, and ``--variant`` parsing."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from nerft.fileio import write_json
from nerft.jsonl import write_jsonl

from .common import Progress, nerft_evaluate, read_jsonl, strict_row

JIEBA_TAGS = {"nr": "PER", "ns": "GPE", "nt": "ORG"}  # jieba's nr, nrt, nrfg are all person names


# ---------------------------------------------------------------------------------------------------------------
# Data


def shuffled_train(train_file: Path, out: Path, seed: int = 42) -> Path:
    """The train split in a seeded random order (nerft prepare keeps the file's order within a split)."""
    if not out.is_file():
        rows = read_jsonl(train_file)
        random.Random(seed).shuffle(rows)
        write_jsonl(out, rows)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Predictions (each function runs in a fresh process and writes a predictions JSONL: id, text, entities, output)


def _write_predictions(out_file: str, docs: list[dict], entities: list[list], answers: list[str] | None) -> None:
    rows = []
    for i, doc in enumerate(docs):
        row = {"id": doc["id"], "text": doc["text"], "entities": [e.to_dict() for e in entities[i]]}
        if answers is not None:
            row["output"] = answers[i]
        rows.append(row)
    write_jsonl(out_file, rows)


class _StampedSeconds:
    """A predictor whose answering time, added to earlier runs', is written to a stamp after every chunk."""

    def __init__(self, predictor, stamp: Path, source: dict, earlier_s: float):
        self.predictor, self.stamp, self.source, self.seconds = predictor, stamp, source, earlier_s

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None):
        start = time.perf_counter()
        out = self.predictor.predict_detailed(texts, labels)
        self.seconds += time.perf_counter() - start
        write_json(self.stamp, {"source": self.source, "seconds": self.seconds})
        return out


def _answer_resumably(predictor, docs: list[dict], out_file: str, source: dict, chunk: int) -> tuple[list, float]:
    """Answers through nerft's resumable ``predict_file`` into OUT.part, going on from a stopped run whose stamp
    (OUT.part.json) names the same model and options; returns the rows in input order and the seconds of all
    runs."""
    from nerft.predict.files import predict_file

    part, stamp, inputs = (Path(f"{out_file}.{suffix}") for suffix in ("part", "part.json", "part-texts.jsonl"))
    recorded = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else {}
    if recorded.get("source") != source:
        part.unlink(missing_ok=True)
        recorded = {}
    write_jsonl(inputs, [{"id": d["id"], "text": d["text"]} for d in docs])
    timed = _StampedSeconds(predictor, stamp, source, float(recorded.get("seconds", 0.0)))
    predict_file(timed, inputs, part, chunk_size=chunk, raw=True)
    by_id = {str(row["id"]): row for row in read_jsonl(part)}
    rows = [by_id[str(d["id"])] for d in docs]
    for path in (part, stamp, inputs):
        path.unlink(missing_ok=True)
    return rows, timed.seconds


def answer_in_chunks(predictor, texts: list[str], chunk: int, what: str) -> tuple[list, list[str], float]:
    """``predictor.predict_detailed`` over ``texts`` in chunks with a progress line: (entities per text, the raw
    answer of each, seconds)."""
    progress, entities, answers = Progress(len(texts), what), [], []
    start = time.perf_counter()
    for s in range(0, len(texts), chunk):
        predictions = predictor.predict_detailed(texts[s:s + chunk])
        entities += [p.entities for p in predictions]
        answers += ["\n".join(p.answers) for p in predictions]
        progress.step(len(texts[s:s + chunk]))
    return entities, answers, time.perf_counter() - start


def predict_with_nerft(test_file: str, limit: int | None, out_file: str, run_dir: str | None = None,
                       base: str | None = None, adapter: str | None = None, prompt_style: str | None = None,
                       batch_size: int = 8, options: dict[str, Any] | None = None, resume: bool = False) -> dict:
    """nerft's predictor on a run directory, or base (+ adapter); ``prompt_style='nerft'`` = zero-shot prompt;
    ``options``: PredictOptions fields (constrained, max_new_tokens, none_bias, ...). ``resume``: answered through
    nerft's resumable ``predict_file`` into ``OUT.part``, so a rerun with the same model and options goes on from
    there (the seconds of earlier runs are added to ``score_s``); for scorings that outlast a session."""
    from nerft.inference.loading import load_model_and_tokenizer
    from nerft.inference.options import LoadOptions, PredictOptions
    from nerft.inference.transformers_backend import TransformersPredictor
    from nerft.labels import ccfbdci_labels
    from nerft.prompts import build_prompt

    docs = read_jsonl(test_file, limit)
    loaded = load_model_and_tokenizer(LoadOptions(model=run_dir, base=base, adapter=adapter, device="cpu"))
    lm, tok, labels, prompt, name = loaded.model, loaded.tokenizer, loaded.labels, loaded.prompt, loaded.name
    if prompt_style == "nerft":
        labels = ccfbdci_labels()
        prompt = build_prompt(labels, "compact", "nerft")
    predictor = TransformersPredictor(lm, tok, labels, prompt,
                                      PredictOptions(**{"batch_size": batch_size, **(options or {})}),
                                      name=name, hint_lexicon=loaded.location.hint_lexicon(prompt))
    chunk = batch_size * 8
    if resume:
        source = {"test_file": str(test_file), "run_dir": run_dir, "base": base, "adapter": adapter,
                  "prompt_style": prompt_style, "batch_size": batch_size, "options": options or {}}
        rows, seconds = _answer_resumably(predictor, docs, out_file, source, chunk)
        write_jsonl(out_file, [{**r, "id": d["id"]} for d, r in zip(docs, rows, strict=True)])
        return {"score_s": seconds, "format": prompt.output_format}
    entities, answers, seconds = answer_in_chunks(predictor, [d["text"] for d in docs], chunk, f"score {name}")
    _write_predictions(out_file, docs, entities, answers)
    return {"score_s": seconds, "format": prompt.output_format}


def tutorial_answers(test_file: str, limit: int | None, base: str, adapter: str | None, what: str
                     ) -> tuple[list[dict], list[str], list[int], list[list], float]:
    """The tutorial's predict() on the first ``limit`` documents: (documents, raw answers, generated tokens of each,
    entities read from each answer as nerft reads the tutorial's format, seconds of generation)."""
    from nerft.answers import read_answer
    from nerft.inference.location import tutorial_prompt

    from .tutorial_baseline import load_for_inference, predict_texts

    docs = read_jsonl(test_file, limit)
    lm, tok = load_for_inference(base, adapter)
    start = time.perf_counter()
    answers, generated = predict_texts([d["text"] for d in docs], lm, tok, Progress(len(docs), what))
    seconds = time.perf_counter() - start
    labels, _ = tutorial_prompt()
    entities = [read_answer(d["text"], a, labels).entities for d, a in zip(docs, answers, strict=True)]
    return docs, answers, generated, entities, seconds


def predict_with_tutorial(test_file: str, limit: int | None, out_file: str, base: str, adapter: str | None) -> dict:
    docs, answers, _, entities, seconds = tutorial_answers(test_file, limit, base, adapter, "score tutorial")
    _write_predictions(out_file, docs, entities, answers)
    return {"score_s": seconds, "format": "tutorial"}


def predict_with_jieba(test_file: str, limit: int | None, out_file: str) -> dict:
    """jieba.posseg: person (nr, nrt, nrfg) -> PER, place (ns) -> GPE, organisation (nt) -> ORG."""
    try:
        import jieba
        import jieba.posseg as pseg
    except ImportError:
        raise SystemExit("the jieba row needs jieba in the benchmark's environment: pip install jieba "
                         "(never a nerft dependency)") from None
    from nerft.schema import Entity

    jieba.setLogLevel(60)
    docs = read_jsonl(test_file, limit)
    start = time.perf_counter()
    entities = []
    for d in docs:
        found, pos = [], 0
        for word, flag in pseg.cut(d["text"]):
            label = next((lab for prefix, lab in JIEBA_TAGS.items() if flag.startswith(prefix)), None)
            if label and d["text"][pos:pos + len(word)] == word:
                found.append(Entity(pos, pos + len(word), label, word))
            pos += len(word)
        entities.append(found)
    seconds = time.perf_counter() - start
    _write_predictions(out_file, docs, entities, None)
    return {"score_s": seconds, "format": None}


def tune_run(run_dir: str, dev_file: str, out_dir: str, options: dict[str, Any]) -> dict:
    """``nerft tune`` on a run directory with its lexicon (when it has one): the decoding chosen on dev."""
    from nerft.config import build_config, to_dict
    from nerft.inference.options import LoadOptions, PredictOptions
    from nerft.lexicon import LEXICON_FILE
    from nerft.tune import MIN_RATES, MIN_SCORES, tune

    lexicon = Path(run_dir) / LEXICON_FILE
    start = time.perf_counter()
    report = tune(LoadOptions(model=run_dir, device="cpu"),
                  PredictOptions(**{**options, "lexicon": str(lexicon) if lexicon.is_file() else None}),
                  dev_file, Path(out_dir), MIN_SCORES, MIN_RATES, progress=False)
    # read back as predict --config reads it (the lexicon is named relative to the file's folder)
    decoding = to_dict(build_config(PredictOptions, {}, config_path=str(Path(out_dir) / "decoding.yaml")))
    return {"tune_s": time.perf_counter() - start, "decoding": decoding, "setting": report["best"]["setting"],
            "dev_f1": pct(report["best"]["f1"]), "dev_f1_answered": pct(report["answered"]["f1"])}


def pct(x: float) -> float:
    return round(100 * x, 2)


def score(gold: Path, pred: str, out_dir: Path, fmt: str | None, labels: str) -> dict[str, Any]:
    """``nerft evaluate``: strict scores from the predictor's entities; parse failures and hallucinations from the
    raw answers (a second pass with --source output) when the file has them."""
    row: dict[str, Any] = strict_row(nerft_evaluate(gold, pred, out_dir, source="entities", labels=labels)["strict"])
    first = read_jsonl(pred, 1)
    if first and "output" in first[0]:
        raw = nerft_evaluate(gold, pred, out_dir.with_name(out_dir.name + "-raw"), source="output", fmt=fmt,
                             labels=labels)
        row["parse_failures"] = raw.get("parse_failures")
        row["hallucinations"] = raw.get("hallucinations")
        row["f1_raw_answers"] = pct(raw["strict"]["micro"]["f1"])
    return row


# ---------------------------------------------------------------------------------------------------------------
# Training


def train_tutorial(model: str, train_file: str, out_dir: str, max_seconds: float | None,
                   limit: int | None = None, max_steps: int = -1) -> dict:
    from .tutorial_baseline import train

    return train(model, train_file, out_dir, limit=limit, max_steps=max_steps, max_seconds=max_seconds,
                 in_order=True, save_strategy="no")


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value,key=value`` -> (name, {dotted key: YAML-parsed value})."""
    import yaml

    name, _, body = spec.partition(":")
    if not name or not body:
        raise SystemExit(f"--variant {spec!r}: expected NAME:key=value[,key=value]")
    overrides = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--variant {spec!r}: {item!r} is not key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides
