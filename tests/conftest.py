"""Shared fixtures: a small Qwen2-like tokenizer trained in-process (the default), a tiny random Qwen2 sized to a
tokenizer, and paths into ../shared for the few tests marked ``shared`` (the real Qwen2 tokenizer, the real
datasets), which skip when it is absent. ``NERFT_SHARED=/nonexistent`` runs the suite as a checkout without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NERFT_SHARED") or REPO.parent / "shared")
QWEN2_TOKENIZER = SHARED / "assets" / "qwen2-tokenizer"
DATA = SHARED / "data"

_CURRENT: list[pytest.Item] = []


def _cuda_and_vllm() -> str | None:
    """Why a ``gpu`` test cannot run here, or None when it can."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "marked gpu: no CUDA device on this machine"
    if importlib.util.find_spec("vllm") is None:
        return "marked gpu: vllm is not installed (pip install 'nerft[vllm]')"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``shared`` skip when ../shared is absent, tests marked ``gpu`` without CUDA and vLLM (each
    reported at its own line with -rs)."""
    skip_shared = None if SHARED.is_dir() else pytest.mark.skip(
        reason=f"marked shared: needs ../shared ({SHARED} is absent)")
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    why_not_gpu = _cuda_and_vllm() if gpu_items else None
    for item in items:
        if skip_shared is not None and item.get_closest_marker("shared") is not None:
            item.add_marker(skip_shared)
    if why_not_gpu:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=why_not_gpu))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Remember the running test: the others may not touch ../shared (see shared_path)."""
    _CURRENT[:] = [item]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is not there. Only for tests marked ``shared``: the
    default suite must run from the repository alone."""
    if _CURRENT and _CURRENT[0].get_closest_marker("shared") is None:
        pytest.fail(f"{_CURRENT[0].nodeid} reads ../shared but is not marked @pytest.mark.shared", pytrace=False)
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared is absent)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models on a small shared machine: one thread avoids OpenMP oversubscription (10-50x slower when the
    other core is busy). Subprocesses (torchrun) set OMP_NUM_THREADS themselves."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer built like Qwen2's (see tiny_tokenizer.py): the suite's default tokenizer."""
    from tiny_tokenizer import build_tiny_qwen2_tokenizer

    return build_tiny_qwen2_tokenizer()


@pytest.fixture(scope="session")
def _real_qwen2_tokenizer():
    tok_dir = shared_path("assets", "qwen2-tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture
def qwen2_tokenizer(request):
    """The real Qwen2 tokenizer from ../shared (loaded once): only for tests marked ``shared``."""
    if request.node.get_closest_marker("shared") is None:
        pytest.fail(f"{request.node.nodeid} uses the real Qwen2 tokenizer but is not marked @pytest.mark.shared",
                    pytrace=False)
    return request.getfixturevalue("_real_qwen2_tokenizer")


TINY_ARCHS = ("qwen2", "qwen3", "llama")  # the base-model families nerft trains, predicts and exports


def make_tiny_qwen2(vocab_size: int = 151936, seed: int = 0, tokenizer=None, arch: str = "qwen2"):
    """A randomly initialised causal LM small enough to train in seconds on a CPU: Qwen2 (default), Qwen3 (its
    per-head q/k norms, a head size that is not hidden / heads) or Llama. With ``tokenizer``: its vocabulary sized to
    it (a little larger, as Qwen2's) and its bos/eos ids from it; without: the real Qwen2's."""
    import torch
    import transformers
    from tiny_tokenizer import model_vocab_size

    bos, eos = 151643, 151645
    if tokenizer is not None:
        vocab_size, bos, eos = model_vocab_size(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    common = {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
              "tie_word_embeddings": True, "bos_token_id": bos, "eos_token_id": eos}
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()
    if arch == "qwen3":
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=16)).eval()
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    raise ValueError(f"no tiny {arch!r}; choose one of {TINY_ARCHS}")
