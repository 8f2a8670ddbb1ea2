"""A character-level tokenizer with Qwen2's ChatML special tokens and chat template, built from scratch.

One token per character: a tiny model learns to copy mentions character by character, which is what makes the
offline demo learn in a couple of minutes on a CPU. It is a byte-level BPE, as Qwen2's is, whose merges build each
character from its UTF-8 bytes and never join two characters, so every exporter and engine that reads Qwen2's
tokenizer reads it too (llama.cpp among them: the demo's GGUF export loads there); a character it was not built
on is written as its bytes, never as an unknown token.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2-Instruct's ChatML template (default system prompt included).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_char_tokenizer(texts: Iterable[str]):
    """A ``PreTrainedTokenizerFast``: the 256 byte symbols, then every character seen (ASCII first) as one token
    built from its bytes by merges of its own, then the special tokens (Qwen2's order: ``<|endoftext|>`` first)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = _byte_symbols()
    chars: dict[str, None] = {}
    for ch in string.printable:
        chars.setdefault(ch, None)
    for text in texts:
        for ch in text:
            chars.setdefault(ch, None)
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    merges: dict[tuple[str, str], None] = {}
    for ch in chars:
        pieces = [alphabet[b] for b in ch.encode("utf-8")]
        built = pieces[0]
        for piece in pieces[1:]:  # (b1, b2) -> b1b2, (b1b2, b3) -> b1b2b3: the character, never across two
            merges.setdefault((built, piece), None)
            built += piece
            vocab.setdefault(built, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("(?m)."), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS, chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "left"
    return fast


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE uses (GPT-2's table), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]
