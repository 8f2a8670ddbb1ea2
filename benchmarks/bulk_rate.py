"""The bulk path's documents/s on given texts, model load excluded: what ``nerft predict --input`` does after it
has loaded the model (``predict_file``, longest first, chunks of 4 batches), timed on the first N texts for each N.

    python -m benchmarks.bulk_rate --texts TEXTS.jsonl --sizes 32,128 -- --model RUN [nerft predict flags]

Prints one JSON line: ``{"sizes": {"32": {"seconds": .., "docs_per_s": ..}, ...}, "load_s": ..}``. Used by
``benchmarks.serve_throughput`` as the baseline a server is compared with, in the same run, on the same texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .common import read_jsonl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", required=True, help="a JSONL file of {id, text} rows")
    parser.add_argument("--sizes", default="32", help="comma-separated: time the first N texts for each N")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the flags of nerft predict")
    args = parser.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags

    from nerft import config as cfglib
    from nerft.cli import build_parser
    from nerft.inference.loading import open_predictor
    from nerft.inference.location import decoding_options
    from nerft.inference.options import LoadOptions
    from nerft.jsonl import write_jsonl
    from nerft.predict.files import predict_file

    rows = read_jsonl(args.texts)
    ns = build_parser("predict").parse_args(["predict", *flags])  # the flags nerft predict would read
    load = cfglib.build_config(LoadOptions, ns)
    options = decoding_options(load, ns, config_path=ns.config)
    start = time.perf_counter()
    predictor = open_predictor(load, options)
    load_s = time.perf_counter() - start
    predictor.predict([rows[0]["text"]])  # first-call set-up, as nerft serve's warm-up pays it
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
            src, dst = Path(tmp) / f"in{n}.jsonl", Path(tmp) / f"out{n}.jsonl"
            write_jsonl(src, [{"id": str(r.get("id", i)), "text": r["text"]} for i, r in enumerate(rows[:n])])
            start = time.perf_counter()
            predict_file(predictor, src, dst, chunk_size=options.batch_size * 4, progress=False)
            seconds = time.perf_counter() - start
            out[str(n)] = {"seconds": round(seconds, 2), "docs_per_s": round(min(n, len(rows)) / seconds, 3)}
    print(json.dumps({"sizes": out, "load_s": round(load_s, 1), "batch_size": options.batch_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
