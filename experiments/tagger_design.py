"""The tagger's design choices (issue 39), each a short run of ``nerft train --task tag`` on CCFBDCI, scored on the
whole dev split: character positions against token positions with the boundary repair, bidirectional against
causal attention, the CRF layer against Viterbi over softmax emissions, BIO against BIOES, all layers against the
first N.

    python -m experiments.tagger_design                    # every variant not measured yet (~12 min each)
    python -m experiments.tagger_design --variants base,char --minutes 10

Every variant is ``configs/qwen2.5-0.5b-cpu-tagger.yaml`` with one setting changed, ``--minutes`` of training
(dev evaluations off the clock), no decoding chosen; then ``nerft evaluate --score-with RUN --no-run-decoding`` on
all 786 dev documents (strict micro F1, as decoded) and the same on the test documents' first ``--speed-docs`` for
documents/s. Resumable per variant (``WORK/tagger_design/<variant>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    WORK,
    log,
    markdown_table,
    nerft_cli,
    prepare_ccfbdci,
    read_jsonl,
    write_results,
)

RECIPE = "configs/qwen2.5-0.5b-cpu-tagger.yaml"
VARIANTS = {  # name -> the flags that make it differ from the recipe
    "base": [],
    "char": ["--tagger.positions", "char"],
    "causal": ["--tagger.attention", "causal"],
    "viterbi": ["--tagger.decoder", "viterbi"],
    "bio": ["--tagger.scheme", "bio"],
    "bidir-last8": ["--tagger.bidirectional-layers", "8"],
    "layers12": ["--tagger.layers", "12"],
    "lr1e-3": ["--optim.lr", "1e-3"],
}


def run_variant(name: str, minutes: float, data: Path, work: Path, speed_docs: int) -> dict:
    run = work / name
    train_flags = ["--config", RECIPE, "--train", data / "train.jsonl", "--dev", data / "dev.jsonl",
                   "--out", run, "--optim.max-minutes", minutes, "--no-tune", "--tracking.backend", "none",
                   "--eval.every", "100000", "--optim.max-steps", "100000", *VARIANTS[name]]
    if (run / "checkpoints").is_dir() and not (run / "metrics.json").is_file():
        train_flags += ["--resume", "latest"]
    elif not (run / "metrics.json").is_file():
        train_flags += ["--output.overwrite"]
    if not (run / "metrics.json").is_file() or "--resume" in train_flags:
        nerft_cli("train", *train_flags)
    metrics = json.loads((run / "metrics.json").read_text())
    dev = _score(run, data / "dev.jsonl", work / f"{name}-dev")
    speed_file = work / f"{name}-speed.jsonl"
    texts = [{"id": d["id"], "text": d["text"]} for d in read_jsonl(data / "test.jsonl", speed_docs)]
    speed_file.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    out = work / f"{name}-speed-out.jsonl"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    nerft_cli("predict", "--model", run, "--input", speed_file, "--output", out, "--no-run-decoding", "--no-progress")
    seconds = time.perf_counter() - start
    train = metrics["train"]
    return {"variant": name, "flags": " ".join(map(str, VARIANTS[name])) or "(the recipe)",
            "steps": train["steps"], "train_examples_per_s": round(train["steps"] * 16 / train["train_seconds"], 2),
            "dev_f1_300": metrics.get("dev", {}).get("best_f1"), **dev,
            "predict_docs_per_s_with_load": round(speed_docs / seconds, 2)}


def _score(run: Path, gold: Path, out: Path) -> dict:
    nerft_cli("evaluate", "--gold", gold, "--score-with", run, "--no-run-decoding", "--out", out, "--no-progress")
    strict = json.loads((out / "metrics.json").read_text())["strict"]
    row = {f"dev_{k}": round(100 * strict["micro"][k], 2) for k in ("precision", "recall", "f1")}
    row.update({f"dev_f1_{label}": round(100 * d["f1"], 2) for label, d in strict["per_label"].items()})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speed-docs", type=int, default=400)
    parser.add_argument("--work", default=str(WORK))
    parser.add_argument("--results", default=str(REPO / "experiments" / "results"))
    parser.add_argument("--note", default="", help="a sentence under the table (how the runs went)")
    args = parser.parse_args(argv)
    data = prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci")
    work = Path(args.work) / "tagger_design"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose among {', '.join(VARIANTS)}")
        done = work / f"{name}.json"
        if not done.is_file():
            log(f"variant {name}: {args.minutes:g} training minutes")
            done.write_text(json.dumps(run_variant(name, args.minutes, data, work, args.speed_docs), indent=1))
        rows.append(json.loads(done.read_text()))
    cols = ["variant", "flags", "steps", "train_examples_per_s", "dev_precision", "dev_recall", "dev_f1",
            "dev_f1_LOC", "dev_f1_PER", "dev_f1_GPE", "dev_f1_ORG", "predict_docs_per_s_with_load"]
    md = (f"## The tagger's design choices, {args.minutes:g} training minutes each (CCFBDCI, all 786 dev documents, "
          "strict micro F1 as decoded, no decoding tuned)\n\n" + markdown_table(rows, cols)
          + f"\n\npredict_docs_per_s_with_load: `nerft predict --input` of the first {args.speed_docs} test "
          "documents, model load included (a process each)." + (f"\n\n{args.note}" if args.note else ""))
    write_results("tagger_design", {"experiment": "tagger_design", "minutes": args.minutes, "rows": rows}, md,
                  Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
