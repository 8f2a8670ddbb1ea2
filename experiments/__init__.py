"""One-off studies behind nerft's choices (not benchmarks a user reruns): each measured once, its results kept in
experiments/results/; see experiments/README.md. They reuse the benchmarks' helpers (``benchmarks.common``)."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
