"""Where a document's prediction time goes: prefill, decode steps, lm_head, constrained-decoding masks, the
repetition guard, answer reading and grounding, tokenization, and what is left (Python, padding, batching).

    python -m benchmarks.profile_predict --model RUN --docs 300                          # nerft predict's default
    python -m benchmarks.profile_predict --model RUN --docs 300 --autocast off --name before
    python -m benchmarks.profile_predict --model EXPORT --backend ct2 --no-constrained --name ct2-int8

One process per call: the predictor is opened as ``nerft predict`` opens it (the run's decoding; ``--autocast``,
``--backend``, ``--[no-]constrained`` as on the command line), then the first ``--docs`` test documents are predicted
once untimed (warm-up: 16 documents) and once under the profiler. Model time comes from forward hooks (wall
clock, a forward whose input has more than one position per row is prefill, one position a decode step; the
lm_head has hooks of its own); the Python parts are cProfile's cumulative times of the functions named in PARTS.
cProfile slows Python down, so the wall time is also measured without it (``seconds_unprofiled``). Appends one
section per call to ``profile_predict.{json,md}`` (``--fresh`` starts them over).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

from .common import RESULTS, WORK, log, markdown_table, prepare_ccfbdci, read_jsonl, write_results

# part -> (file suffix, function name) whose cumulative time it is
PARTS = {
    "constrained masks": ("nerft/constrained.py", "__call__"),
    "repetition guard": ("nerft/inference/base.py", "__call__"),
    "prompt tokenization": ("nerft/generation.py", "prompt_ids"),
    "answer reading + grounding": ("nerft/inference/base.py", "_merge"),
    "ct2 generate_batch (engine)": ("nerft/inference/ct2_backend.py", "_batch"),
    "llama.cpp generate (engine)": ("nerft/inference/llamacpp_backend.py", "generate"),
}


class ForwardTimer:
    """Wall time of a module's forward calls, split by the number of positions per row it was given."""

    def __init__(self, module, outer: ForwardTimer | None = None):
        """``outer``: the timer of the module this one runs inside, whose current kind its calls take."""
        self.outer, self.t0 = outer, 0.0
        self.times = {"prefill": 0.0, "decode": 0.0, "calls": 0.0}
        self.handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                        module.register_forward_hook(self._post, with_kwargs=True)]
        self.kind = "decode"

    def _pre(self, module, args, kwargs):
        if self.outer is not None:
            self.kind = self.outer.kind
        else:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.kind = "prefill" if ids is not None and ids.dim() >= 2 and ids.shape[-1] > 1 else "decode"
        self.t0 = time.perf_counter()

    def _post(self, module, args, kwargs, output):
        self.times[self.kind] += time.perf_counter() - self.t0
        self.times["calls"] += 1

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def profile(args) -> dict:
    from nerft.inference.loading import open_predictor
    from nerft.inference.location import decoding_options
    from nerft.inference.options import LoadOptions

    load = LoadOptions(model=args.model, backend=args.backend, device="cpu", autocast=args.autocast)
    load.ct2.threads = load.llamacpp.threads = args.threads
    given = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.constrained is not None:
        given["constrained"] = args.constrained
    predictor = open_predictor(load, decoding_options(load, given))
    test = args.test or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "test.jsonl")
    texts = [d["text"] for d in read_jsonl(test, args.docs)]
    predictor.predict_detailed(texts[:16])
    start = time.perf_counter()
    predictor.predict_detailed(texts)
    unprofiled = time.perf_counter() - start

    model = getattr(predictor, "model", None)
    timers = {}
    if model is not None:
        timers["model forward"] = ForwardTimer(model)
        timers["lm_head"] = ForwardTimer(model.get_output_embeddings(), outer=timers["model forward"])
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    predictor.predict_detailed(texts)
    profiler.disable()
    total = time.perf_counter() - start
    for t in timers.values():
        t.remove()

    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    if model is not None:
        fwd, head = timers["model forward"].times, timers["lm_head"].times
        # the lm_head runs inside the forward: its time is taken off the prefill or decode step it ran in
        parts["prefill (blocks)"] = fwd["prefill"] - head["prefill"]
        parts["decode steps (blocks)"] = fwd["decode"] - head["decode"]
        parts["lm_head"] = head["prefill"] + head["decode"]
    for part, (suffix, func) in PARTS.items():
        seconds = sum(v[3] for (file, _, name), v in stats.items() if file.endswith(suffix) and name == func)
        if seconds > 0:
            parts[part] = seconds
    accounted = sum(parts.values())
    parts["other (Python, padding, batching, scheduling)"] = max(total - accounted, 0.0)
    rows = [{"part": k, "seconds": round(v, 2), "share": round(v / total, 3),
             "ms_per_doc": round(1000 * v / len(texts), 1)} for k, v in parts.items()]
    return {"name": args.name, "backend": args.backend, "autocast": args.autocast, "model": args.model,
            "docs": len(texts), "batch_size": predictor.options.batch_size,
            "constrained": predictor.options.constrained, "seconds_profiled": round(total, 2),
            "seconds_unprofiled": round(unprofiled, 2), "docs_per_s_unprofiled": round(len(texts) / unprofiled, 2),
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"])
    parser.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=None,
                        help="constrained decoding on/off (default: as the run's decoding says)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--test", default=None)
    parser.add_argument("--name", default=None, help="the section's name (default: backend + autocast)")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--out-name", default="profile_predict")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)
    args.name = args.name or f"{args.backend} autocast={args.autocast}"
    import torch

    torch.set_num_threads(args.threads)
    previous = Path(args.results) / f"{args.out_name}.json"
    sections = [] if args.fresh or not previous.is_file() else json.loads(previous.read_text())["sections"]
    sections = [s for s in sections if s["name"] != args.name]
    result = profile(args)
    log(f"{result['name']}: {result['docs_per_s_unprofiled']} docs/s unprofiled")
    sections.append(result)
    md = ["## Where prediction time goes (cProfile + forward hooks)\n"]
    for s in sections:
        md += [f"### {s['name']}: {s['docs']} documents, batch {s['batch_size']}, constrained {s['constrained']}; "
               f"{s['docs_per_s_unprofiled']} docs/s unprofiled ({s['seconds_unprofiled']} s), "
               f"{s['seconds_profiled']} s profiled\n", markdown_table(s["rows"], ["part", "seconds", "share",
                                                                                   "ms_per_doc"]), ""]
    write_results(args.out_name, {"benchmark": "profile_predict", "sections": sections}, "\n".join(md),
                  Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
