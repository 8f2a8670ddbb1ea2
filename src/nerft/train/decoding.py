"""The decoding a finished run predicts with by default, chosen on dev as ``nerft tune`` chooses it.

The saved run (RUN/adapter, the way ``nerft predict --model RUN`` opens it) answers the dev texts once; every
candidate (min-score, per-label min-scores, the run's lexicon at each min-rate) is replayed on those answers and
scored (``tune.tune_documents``). The best goes to RUN/decoding.yaml, the report and the answers to RUN/tune/, and
the choice with its dev scores to nerft.json (``RunInfo.decoding``) for the model card.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..labels import LabelSet
from ..lexicon import LEXICON_FILE, Lexicon
from ..rundir import DECODING_FILE, RunInfo
from ..schema import Document, NerftError
from .config import TrainConfig
from .data import dev_file

TUNE_DIR = "tune"


def forget_decoding(run_dir: Path) -> None:
    """Remove a decoding chosen for an earlier adapter: a session that trains may change the adapter."""
    (run_dir / DECODING_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / TUNE_DIR, ignore_errors=True)


def choose_run_decoding(cfg: TrainConfig, run_dir: Path, progress: bool | None = None) -> dict[str, Any]:
    """Tune the saved run on dev; writes RUN/decoding.yaml and RUN/tune/, records the choice in nerft.json and
    returns that record."""
    from ..inference.options import LoadOptions, PredictOptions
    from ..jsonl import read_documents
    from ..tune import MIN_RATES, MIN_SCORES, tune_documents

    dev = dev_file(cfg.data)
    if dev is None:
        raise NerftError("no dev split to choose the decoding on: pass --dev FILE.jsonl")
    gold = read_documents(dev)[:cfg.tune.dev_docs]
    lexicon = run_dir / LEXICON_FILE
    load = LoadOptions(model=str(run_dir), device=cfg.model.device, run_decoding=False)
    options = PredictOptions(lexicon=str(lexicon) if cfg.tune.lexicon and lexicon.is_file() else None,
                             constrained=cfg.tune.constrained)
    report = tune_documents(load, options, gold, dev, run_dir / TUNE_DIR, MIN_SCORES, MIN_RATES,
                            per_label=cfg.tune.per_label, progress=progress, decoding_file=run_dir / DECODING_FILE)

    def prf(row: dict[str, Any]) -> dict[str, float]:
        return {k: row[k] for k in ("precision", "recall", "f1")}

    record = {"file": DECODING_FILE, "options": report["decoding"], "setting": report["best"]["setting"],
              "dev": {"file": dev, "documents": len(gold), "answered": prf(report["answered"]),
                      "chosen": prf(report["best"])},
              "report": f"{TUNE_DIR}/tune.md"}
    info = RunInfo.load(run_dir)
    info.decoding = record
    info.save(run_dir)
    return record


def describe(record: dict[str, Any]) -> str:
    """One line: the choice and its dev scores."""
    dev = record["dev"]
    chosen, answered = dev["chosen"], dev["answered"]
    return (f"decoding chosen on dev ({dev['documents']} documents): {record['setting']}: F1 "
            f"{100 * chosen['f1']:.2f} (P {100 * chosen['precision']:.2f}, R {100 * chosen['recall']:.2f}); "
            f"as answered {100 * answered['f1']:.2f}")


def apply_decoding(docs: list[Document], run_dir: Path, labels: LabelSet) -> list[Document]:
    """Predictions made with the default decoding, finished as RUN/decoding.yaml says (the predictor's own last
    step, ``finish_entities``, replayed)."""
    from ..inference.base import finish_entities
    from ..inference.location import read_decoding
    from ..inference.options import PredictOptions

    options = PredictOptions(**(read_decoding(run_dir / DECODING_FILE) or {}))
    lexicon = Lexicon.load(options.lexicon) if options.lexicon else None
    codes = set(labels.codes)
    return [Document(d.id, d.text, finish_entities(d.text, list(d.entities), options, lexicon, codes))
            for d in docs]
