"""A small byte-level BPE tokenizer built like Qwen2's, trained in-process: the default suite's tokenizer.

It is Qwen2's tokenizer in miniature, so tests that exercise the pipeline (prompts, label masking, generation,
constrained decoding, export, serving) need nothing outside the repository:

- the same pipeline: NFC normalisation, Qwen2's pre-tokenisation regex, byte-level BPE with every one of the 256
  byte symbols in the vocabulary (so any text encodes, unseen Chinese characters included, and token pieces map to
  bytes the way ``nerft.constrained`` reads them), a byte-level decoder;
- merges learned on the text the tests use (the demo corpus, every built-in prompt, label names, JSON punctuation,
  the tutorial's "no entity" answer, ASCII): so tokens span several bytes and split Chinese characters
  differently from one character a token, as Qwen2's do;
- Qwen2's special tokens added *after* the learned vocabulary, as in Qwen2 (``<|endoftext|>`` first), with pad =
  ``<|endoftext|>``, eos = ``<|im_end|>``, no bos or unk, and Qwen2-Instruct's ChatML chat template.

``test_tiny_tokenizer.py`` checks these properties; a ``shared``-marked test there compares it with the real Qwen2
tokenizer (same template output, same special tokens, same pipeline).
"""

from __future__ import annotations

import string

from nerft.formats import FORMATS, TUTORIAL_NONE
from nerft.labels import ccfbdci_labels, cluener_labels
from nerft.prompts import build_prompt
from nerft.resources.demo_corpus import generate_corpus

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Qwen2's order: ids len(bpe) + 0, 1, 2
# Qwen2's pre-tokenisation split (tokenizer.json, pre_tokenizer[0]).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2-Instruct's ChatML template: a default system turn when the conversation has none.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
VOCAB_SIZE = 2048  # learned tokens (the 256 byte symbols included); the specials come on top


def training_texts(n_docs: int = 400) -> list[str]:
    """What the tests tokenise: documents, their answers in every format, every built-in prompt, chat markup."""
    texts: list[str] = []
    docs = generate_corpus(n_docs, seed=0)
    for labels in (ccfbdci_labels(), cluener_labels()):
        texts += [lab.name for lab in labels.labels] + [lab.code for lab in labels.labels]
        texts += [lab.description for lab in labels.labels if lab.description]
        prompts = [build_prompt(labels, fmt, "nerft", describe_labels=described)
                   for fmt in FORMATS for described in (False, True)]
        prompts.append(build_prompt(labels, "tutorial", "tutorial"))
        texts += [p.system for p in prompts] + [p.user_prefix for p in prompts]
    labels = ccfbdci_labels()
    for doc in docs:
        texts.append(doc.text)
        texts += [fmt.render(doc.entities, labels) for fmt in FORMATS.values()]
    texts += [TUTORIAL_NONE, "无实体", "没有找到任何实体", '{"entity_text": "", "entity_label": ""}', "[]", "{}",
              "system\nYou are a helpful assistant.", "user\n", "assistant\n", "文本:"]
    texts += [string.ascii_letters, string.digits, string.punctuation, string.printable, "{}[]\":,\\ \n\t"]
    return texts


def build_tiny_qwen2_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A ``Qwen2TokenizerFast`` (about 0.1 s to train) with Qwen2's pipeline, specials and chat template."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.trainers import BpeTrainer
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), continuing_subword_prefix="",
                         end_of_word_suffix="")
    tok.train_from_iterator(training_texts(), trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # Qwen2's own tokenizer class (a PreTrainedTokenizerFast), so a saved copy loads back as the real one does.
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHAT_TEMPLATE, errors="replace",
        clean_up_tokenization_spaces=False, model_max_length=32768, split_special_tokens=False,
    )
    return fast


def model_vocab_size(tokenizer) -> int:
    """A model vocabulary a little larger than the tokenizer's, as Qwen2's (151,936 rows for 151,665 tokens): the
    extra rows are ids no token has, which decoding must never pick. The real tokenizer keeps Qwen2's size."""
    n = len(tokenizer)
    return 151936 if n > 150_000 else (n // 64 + 1) * 64
