"""Assemble benchmarks/RESULTS.md from the latest result tables in benchmarks/results/.

    python -m benchmarks.collect_results [--current benchmarks/CURRENT.md]

RESULTS.md opens with the current figures (``CURRENT.md``, kept by hand: one table, the command and CPU of each
figure), then each benchmark's latest ``results/<name>.md`` (machine, versions, exact command, table) in a fixed
order (B1, B2, B3, the full-data run and the learning curve, B4, then anything else). The sessions' notes are in
``HISTORY.md``, the one-off studies' results in ``experiments/results/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import RESULTS

ORDER = ["matmul_peak", "b1_train", "b2_predict", "b3_accuracy", "b3_full60", "learning_curve", "b4_gpu"]


def collect(results: Path = RESULTS, current: str = "") -> str:
    tables = sorted(results.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER),
                                                         p.stem))
    parts = ["# Benchmark results\n",
             "Written by `python -m benchmarks.collect_results` from `benchmarks/results/*.md`; how to run each "
             "benchmark: `benchmarks/README.md`; the history of these figures: `benchmarks/HISTORY.md`.\n"]
    if current:
        parts.append(current.rstrip() + "\n")
    parts.append("\n## The latest table of each benchmark\n")
    for path in tables:
        parts.append(f"\n---\n\n<!-- {path.name} -->\n" + path.read_text(encoding="utf-8").rstrip() + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--current", default=str(Path(__file__).with_name("CURRENT.md")),
                        help="markdown placed above the tables: the current figures")
    parser.add_argument("--output", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    current = Path(args.current).read_text(encoding="utf-8") if args.current and Path(args.current).is_file() else ""
    Path(args.output).write_text(collect(Path(args.results), current), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
