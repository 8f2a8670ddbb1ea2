"""A character-level tokenizer with Qwen2's ChatML special tokens and chat template, built from scratch.

One token per character: a tiny model learns to copy mentions character by character, which is what makes the
offline demo learn in a couple of minutes on a CPU.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
UNK = "<unk>"
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
    """A ``PreTrainedTokenizerFast``: specials first (ids 0-2), then <unk>, ASCII, then every character seen."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars: dict[str, None] = {}
    for ch in string.printable:
        chars.setdefault(ch, None)
    for text in texts:
        for ch in text:
            chars.setdefault(ch, None)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [UNK])}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS, chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "left"
    return fast
