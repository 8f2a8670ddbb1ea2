"""Shared fixtures: paths into ../shared (skipped when absent) and a tiny random Qwen2 with the real tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
QWEN2_TOKENIZER = SHARED / "assets" / "qwen2-tokenizer"
DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared is absent)")
    return path


@pytest.fixture(scope="session")
def qwen2_tokenizer():
    tok_dir = shared_path("assets", "qwen2-tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def make_tiny_qwen2(vocab_size: int = 151936, seed: int = 0):
    """A randomly initialised Qwen2ForCausalLM small enough to train in seconds on a CPU."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=151643, eos_token_id=151645,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture
def tiny_qwen2():
    return make_tiny_qwen2()
