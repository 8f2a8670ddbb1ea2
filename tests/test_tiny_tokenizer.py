"""The suite's tokenizer (tests/tiny_tokenizer.py): Qwen2's byte-level BPE pipeline, special tokens and chat
template in miniature. The last test, marked ``shared``, holds it against the real Qwen2 tokenizer."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_tokenizer import SPECIAL_TOKENS, build_tiny_qwen2_tokenizer, model_vocab_size

from nerft.constrained import vocab_bytes
from nerft.formats import TUTORIAL_NONE
from nerft.generation import end_of_turn_id, prompt_ids, stop_token_ids
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt

CONVERSATIONS = [
    [{"role": "system", "content": "抽取实体"}, {"role": "user", "content": "张三在北京。"}],
    [{"role": "user", "content": "hi"}],  # no system turn: the template's default one
    [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
]


def test_special_tokens_and_ids_are_laid_out_as_in_qwen2(tiny_tokenizer):
    tok = tiny_tokenizer
    n = len(tok)
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert ids == [n - 3, n - 2, n - 1]  # after the learned vocabulary, <|endoftext|> first
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.bos_token is None and tok.unk_token is None
    assert set(tok.all_special_tokens) == set(SPECIAL_TOKENS)
    assert end_of_turn_id(tok) == ids[2] and set(stop_token_ids(tok)) == {ids[0], ids[2]}
    # a special token in the text is one id; its pieces are never merged into ordinary tokens
    assert tok.encode("a<|im_end|>b", add_special_tokens=False)[1] == ids[2]
    assert 1500 < tok.vocab_size <= 2048
    assert model_vocab_size(tok) > n and model_vocab_size(tok) % 64 == 0


def test_chat_template_is_qwen2_chatml(tiny_tokenizer):
    text = tiny_tokenizer.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\n抽取实体<|im_end|>\n<|im_start|>user\n张三在北京。<|im_end|>\n"
                    "<|im_start|>assistant\n")
    default = tiny_tokenizer.apply_chat_template(CONVERSATIONS[1], tokenize=False)
    assert default == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    prompt = build_prompt(ccfbdci_labels(), "compact")
    ids = prompt_ids(tiny_tokenizer, prompt, "张三在北京。")
    assert tiny_tokenizer.decode(ids) == tiny_tokenizer.apply_chat_template(
        prompt.messages("张三在北京。"), add_generation_prompt=True, tokenize=False)


def test_byte_level_bpe_with_learned_merges(tiny_tokenizer):
    tok = tiny_tokenizer
    vb = vocab_bytes(tok)
    assert all(vb.index.get(bytes([b])) for b in range(256))  # every byte: any text encodes without <unk>
    # merges learned from the suite's text: label names and common words are single tokens ...
    for word in ("人名", "地点", "组织", "北京"):
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    # ... while an unseen character falls apart into bytes, which decode back to it
    rare = "龘"
    ids = tok.encode(rare, add_special_tokens=False)
    assert len(ids) == 3 and b"".join(vb.bytes[i] for i in ids) == rare.encode()
    # some vocabulary entries hold only part of a character, as in Qwen2: constrained decoding must handle them
    assert any(b and (b[0] & 0xC0) == 0x80 for b in vb.bytes)
    system = build_prompt(ccfbdci_labels(), "tutorial", "tutorial").system
    assert len(tok.encode(system, add_special_tokens=False)) < len(system.encode()) / 2  # merges compress


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
def test_any_text_round_trips(tiny_tokenizer, text):
    import unicodedata

    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == unicodedata.normalize("NFC", text)  # Qwen2 normalises to NFC too


def test_save_and_auto_load_round_trip(tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tiny_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"  # AutoTokenizer's class for Qwen2 checkpoints
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast) and type(loaded) is type(tiny_tokenizer)
    assert loaded.get_vocab() == tiny_tokenizer.get_vocab() and len(loaded) == len(tiny_tokenizer)
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id)
    for conv in CONVERSATIONS:
        assert loaded.apply_chat_template(conv, tokenize=True) == tiny_tokenizer.apply_chat_template(conv, tokenize=True)
    text = f"地点:北京\n{TUTORIAL_NONE} 龘 ok!"
    assert loaded.encode(text) == tiny_tokenizer.encode(text)


def test_training_is_deterministic(tiny_tokenizer):
    again = build_tiny_qwen2_tokenizer()
    assert again.get_vocab() == tiny_tokenizer.get_vocab()


def _without_trim_offsets(node):
    """A tokenizer.json tree without ``trim_offsets``: it shapes offset mappings, never ids, and transformers 5
    rebuilds Qwen2's byte-level pre-tokenizer with it on where the published file has it off."""
    if isinstance(node, dict):
        return {k: _without_trim_offsets(v) for k, v in node.items() if k != "trim_offsets"}
    if isinstance(node, list):
        return [_without_trim_offsets(v) for v in node]
    return node


@pytest.mark.shared
def test_matches_the_real_qwen2_tokenizer(tiny_tokenizer, qwen2_tokenizer):
    """The tiny tokenizer stands in for Qwen2's: same class, pipeline, special tokens and layout, template."""
    tiny, real = tiny_tokenizer, qwen2_tokenizer
    assert type(tiny) is type(real)
    tiny_json, real_json = (_without_trim_offsets(json.loads(t.backend_tokenizer.to_str())) for t in (tiny, real))
    for part in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        assert tiny_json[part] == real_json[part], part
    assert {k: v for k, v in tiny_json["model"].items() if k not in ("vocab", "merges")} == {
        k: v for k, v in real_json["model"].items() if k not in ("vocab", "merges")}
    for attr in ("pad_token", "eos_token", "bos_token", "unk_token", "all_special_tokens", "padding_side"):
        assert getattr(tiny, attr) == getattr(real, attr), attr
    assert [t["content"] for t in tiny_json["added_tokens"]] == [t["content"] for t in real_json["added_tokens"]][:3]
    assert tiny.convert_tokens_to_ids(SPECIAL_TOKENS) == [len(tiny) - 3 + i for i in range(3)]
    assert real.convert_tokens_to_ids(SPECIAL_TOKENS) == [real.vocab_size + i for i in range(3)]
    for conv in CONVERSATIONS:
        for gen in (False, True):
            assert tiny.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False) == \
                real.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
    # the same pre-tokenisation: the words BPE merges within are the same words
    pre = [tok.backend_tokenizer.pre_tokenizer for tok in (tiny, real)]
    for text in ("张三在北京。He's 12 years, ok?\n\n  x", '{"entity_text": "张三", "entity_label": "人名"}'):
        assert pre[0].pre_tokenize_str(text) == pre[1].pre_tokenize_str(text)
    # both are byte-level: the same byte table reads their pieces
    tiny_vb, real_vb = vocab_bytes(tiny), vocab_bytes(real)
    for b in range(256):
        assert tiny_vb.index.get(bytes([b])) and real_vb.index.get(bytes([b]))
