"""generate_batch with the project's char tokenizer (no ../shared needed): the shared-prefix cache and rows leaving
the batch change nothing, and the KV cache goes by the keyword the installed transformers takes."""

from __future__ import annotations

import warnings

import pytest
from conftest import make_tiny_qwen2
from nerft_helpers import char_tokenizer

from nerft.generation import PrefixCache, cache_keyword, generate_batch, prompt_ids, shared_prefix_ids
from nerft.labels import ccfbdci_labels
from nerft.modeling import LoraSettings, add_lora
from nerft.prompts import build_prompt

TEXTS = ["北京是中国的首都。", "张三在上海工作。", "今天天气不错", "联合国秘书长访问了巴黎。"]


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    model = make_tiny_qwen2(vocab_size=len(tok), seed=3)
    prompt = build_prompt(ccfbdci_labels(), "compact")
    return model, tok, prompt, [prompt_ids(tok, prompt, t) for t in TEXTS]


def test_prefix_cache_and_dropped_rows_change_nothing(setup):
    model, tok, prompt, ids = setup
    limits = [2, 9, 1, 5]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")  # transformers 5 deprecates the old keyword
        plain = generate_batch(model, tok, ids, limits)
        prefix = PrefixCache(model, shared_prefix_ids(tok, prompt))
        cached = generate_batch(model, tok, ids, limits, prefix=prefix)
        alone = [generate_batch(model, tok, [x], [n])[0] for x, n in zip(ids, limits, strict=True)]
    assert len(prefix.ids) > 20
    assert [g.token_ids for g in plain] == [g.token_ids for g in cached] == [g.token_ids for g in alone]
    assert [len(g.token_ids) for g in plain] == limits  # a random model never ends its turn early here
    for a, b in zip(plain, cached, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_cache_keyword_sees_through_a_peft_model(setup):
    import inspect

    model = setup[0]
    expected = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    assert cache_keyword(model) == expected
    assert cache_keyword(add_lora(make_tiny_qwen2(vocab_size=64), LoraSettings(r=2))) == expected
