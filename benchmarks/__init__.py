"""Benchmarks: nerft vs the Qwen2-NER tutorial's recipe. Not part of the nerft package; see benchmarks/README.md."""
