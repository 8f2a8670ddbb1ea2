"""Training data: the documents a recipe selects, documents -> chat prompt + answer token ids (loss on the
answer only), the per-epoch batch order (a pure function of seed and epoch, so ``--resume`` replays it) and
collation (padded, packed, or with the prompt prefix that every example shares laid out once)."""

from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..formats import OutputFormat, get_format
from ..generation import end_of_turn_id, pad_token_id, prompt_ids, shared_prefix_ids
from ..jsonl import read_documents
from ..labels import LabelSet, load_label_set
from ..lexicon import Lexicon
from ..prompts import Prompt, build_prompt
from ..schema import Document, NerftError

if TYPE_CHECKING:
    from .config import DataConfig, TrainConfig

IGNORE = -100
logger = logging.getLogger("nerft.train")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens
    # leading tokens that are the prompt prefix every example shares (system turn + user header), set by
    # mark_shared_prefix (data.shared_prefix); 0: none recorded
    prefix_len: int = 0
    group: int = 0  # data.mixture: the index of the folder it comes from


@dataclass
class EncodedData:
    examples: list[Example]
    overlong: int = 0  # examples longer than max_length (dropped, kept or cut as configured)
    supervised_tokens: int = 0
    prefix_lens: list[int] = field(default_factory=list)  # data.mixture + data.shared_prefix: each folder's
    prompts: list[tuple[LabelSet, Prompt]] = field(default_factory=list)  # data.mixture: each folder's


def answer_end_id(tokenizer: Any, end_token: str) -> int:
    """<|im_end|> closes the assistant turn; the tutorial ends its answers with the pad token instead."""
    return pad_token_id(tokenizer) if end_token == "pad" else end_of_turn_id(tokenizer)


def encode_document(doc: Document, tokenizer: Any, prompt: Prompt, fmt: OutputFormat, labels: LabelSet,
                    end_id: int, hint: str = "") -> Example:
    """Chat prompt ids (ending with the assistant header) + answer ids + end token; labels mask the prompt."""
    prompt_part = prompt_ids(tokenizer, prompt, doc.text, hint)
    answer = fmt.render(doc.entities, labels)
    answer_part = tokenizer(answer, add_special_tokens=False)["input_ids"] + [end_id]
    return Example(prompt_part + answer_part, [IGNORE] * len(prompt_part) + answer_part)


def encode_documents(docs: list[Document], tokenizer: Any, prompt: Prompt, fmt: OutputFormat,
                     labels: LabelSet, end_id: int, max_length: int, overlong: str,
                     lexicon: Lexicon | None = None) -> EncodedData:
    """``lexicon``: the hints' counts when ``prompt.hints`` (each document's own counts left out)."""
    if prompt.hints and lexicon is None:
        raise NerftError("the prompt asks for lexicon hints but no lexicon was given")
    out = EncodedData([])
    for doc in docs:
        hint = lexicon.hint(doc.text, prompt.hints, labels.name_of, own=doc) if lexicon is not None else ""
        ex = encode_document(doc, tokenizer, prompt, fmt, labels, end_id, hint)
        if len(ex.input_ids) > max_length:
            out.overlong += 1
            if overlong == "drop":
                continue
            if overlong == "truncate":
                ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        out.supervised_tokens += sum(1 for t in ex.labels if t != IGNORE)
        out.examples.append(ex)
    return out


def mark_shared_prefix(examples: Sequence[Example], candidate: Sequence[int]) -> int:
    """Record in every example (``prefix_len``) the longest start of ``candidate`` (the prompt prefix,
    ``generation.shared_prefix_ids``) that all their token ids share and that ends inside every prompt, so the
    prefix never predicts a supervised token; returns its length.

    Not simply ``len(candidate)``: a BPE merge can join the last prefix tokens to the text's first characters
    (e.g. the tutorial's ``文本:`` user prefix before a text that starts with a letter that merges with the colon),
    and then the common prefix is shorter."""
    n = len(candidate)
    for ex in examples:
        prompt_len = next((i for i, t in enumerate(ex.labels) if t != IGNORE), len(ex.labels))
        limit, k = min(n, prompt_len - 1), 0
        while k < limit and ex.input_ids[k] == candidate[k]:
            k += 1
        n = k
    for ex in examples:
        ex.prefix_len = n
    return n


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  mega_batches: int = 50, groups: Sequence[int] | None = None) -> list[list[int]]:
    """Example indices per micro-batch for one epoch; a pure function of (seed, epoch), so --resume replays it.

    With length grouping the shuffled order is cut into mega-batches of ``mega_batches`` batches, each sorted by
    length before being cut into batches, and the batches are shuffled: similar lengths share a batch (little
    padding) while the order stays random.

    ``groups`` (one value per example; a data.mixture run's folders under data.shared_prefix): every batch holds
    one group's examples, so it shares that group's whole prompt prefix; the batches of all groups are shuffled
    together.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    parts = [[i for i in order if groups[i] == g] for g in sorted(set(groups))] if groups else [order]
    batches = []
    for part in parts:
        if group_by_length:
            chunk = batch_size * mega_batches
            part = [i for s in range(0, len(part), chunk)
                    for i in sorted(part[s:s + chunk], key=lambda i: -lengths[i])]
        batches += [part[s:s + batch_size] for s in range(0, len(part), batch_size)]
    if group_by_length or len(parts) > 1:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int, packing: bool, shared_prefix: bool = False
            ) -> dict[str, torch.Tensor]:
    """Right-padded batch with an attention mask, or (packing) one row whose position ids restart per example,
    or (``shared_prefix``, when every example records the same prefix) ``collate_shared_prefix``.

    transformers (>= 4.53) turns restarting position ids without an attention mask into a block-diagonal causal
    mask, so packed examples never attend to each other (tests/test_train.py checks the logits match).
    """
    if shared_prefix and _same_prefix(examples):
        return collate_shared_prefix(examples, pad_id)
    if packing:
        ids = [t for ex in examples for t in ex.input_ids]
        label_ids = [t for ex in examples for t in ex.labels]
        positions = [p for ex in examples for p in range(len(ex.input_ids))]
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([label_ids]),
                "position_ids": torch.tensor([positions])}
    width = max(len(ex.input_ids) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        input_ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(ex.labels)
        attention[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def _same_prefix(examples: list[Example]) -> bool:
    n = examples[0].prefix_len
    head = examples[0].input_ids[:n]
    return n > 0 and all(ex.prefix_len == n and ex.input_ids[:n] == head for ex in examples[1:])


def collate_shared_prefix(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """``[prefix once][row tokens right-padded]``: ``prefix_ids`` (1 x P), the rows' ``input_ids``/``labels``
    (B x W), an ``attention_mask`` over prefix + row (B x (P + W)) and ``position_ids`` P.. P + W - 1.

    ``SupervisedLoss`` runs the prefix once, repeats its KV cache over the rows and runs the rows after it: each
    real token sees the prefix and its own row's earlier tokens at the positions it has alone (right padding
    comes after them), so loss and gradients are those of the plain padded batch (tests/test_shared_prefix.py).
    """
    n = examples[0].prefix_len
    width = max(len(ex.input_ids) - n for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), n + width), dtype=torch.long)
    attention[:, :n] = 1
    for i, ex in enumerate(examples):
        k = len(ex.input_ids) - n
        input_ids[i, :k] = torch.tensor(ex.input_ids[n:])
        labels[i, :k] = torch.tensor(ex.labels[n:])
        attention[i, n:n + k] = 1
    positions = torch.arange(n, n + width).expand(len(examples), width).clone()
    return {"prefix_ids": torch.tensor([examples[0].input_ids[:n]]), "input_ids": input_ids, "labels": labels,
            "attention_mask": attention, "position_ids": positions}


def limit_empty_documents(docs: list[Document], share: float, seed: int) -> list[Document]:
    """Drop a seeded random subset of the entity-less documents so that they make up at most ``share`` of the
    result; the order of the documents kept is unchanged."""
    if not 0.0 <= share < 1.0:
        raise NerftError(f"data.empty_share must be in [0, 1), got {share}")
    empty = [i for i, d in enumerate(docs) if not d.entities]
    with_entities = len(docs) - len(empty)
    allowed = int(share * with_entities / (1.0 - share))
    if len(empty) <= allowed:
        return docs
    keep = set(random.Random(seed).sample(empty, allowed))
    return [d for i, d in enumerate(docs) if d.entities or i in keep]


def resolve_labels(cfg: DataConfig, train_docs: list[Document]) -> LabelSet:
    """``data.labels`` when given, else labels.json beside the train file (the first ``data.mixture`` folder's),
    else inferred from the training data."""
    if cfg.labels:
        return load_label_set(cfg.labels)
    if cfg.mixture:
        return _folder_labels(Path(cfg.mixture[0]))
    beside = Path(cfg.train).parent / "labels.json"  # type: ignore[arg-type]
    if beside.is_file():
        return LabelSet.from_file(beside)
    return LabelSet.infer(e.label for d in train_docs for e in d.entities)


def dev_file(cfg: DataConfig) -> str | None:
    """The dev split: ``data.dev``, else (a ``data.mixture`` run) the first folder's dev.jsonl when it has one."""
    if cfg.dev or not cfg.mixture:
        return cfg.dev
    first = Path(cfg.mixture[0]).expanduser() / "dev.jsonl"
    return str(first) if first.is_file() else None


def load_training_documents(cfg: TrainConfig, main: bool) -> tuple[list[Document], list[Document], Lexicon]:
    """(training documents, dev subset) after ``data.max_examples`` and ``data.empty_share``, and the lexicon of
    the training documents before ``data.empty_share`` (the documents it drops say which strings go unannotated)."""
    if cfg.data.mixture:
        return _load_mixture(cfg, main)
    if not cfg.data.train:
        raise NerftError("no training data: pass --train FILE.jsonl (or data.train in the config)")
    train_docs = read_documents(cfg.data.train)
    if cfg.data.max_examples:
        train_docs = train_docs[:cfg.data.max_examples]
    lexicon = Lexicon.from_documents(train_docs)
    if cfg.data.empty_share is not None:
        before = len(train_docs)
        train_docs = limit_empty_documents(train_docs, cfg.data.empty_share, cfg.optim.seed)
        if main:
            logger.info(f"data.empty_share {cfg.data.empty_share}: kept {len(train_docs)} of {before} documents")
    dev_docs = read_documents(cfg.data.dev)[:cfg.eval.dev_docs] if cfg.data.dev else []
    return train_docs, dev_docs, lexicon


def _folder_labels(folder: Path) -> LabelSet:
    if not (folder / "labels.json").is_file():
        raise NerftError(f"data.mixture: {folder} has no labels.json; pass folders written by nerft prepare")
    return LabelSet.from_file(folder / "labels.json")


def mixture_parts(cfg: TrainConfig) -> list[tuple[LabelSet, list[Document]]]:
    """Each ``data.mixture`` folder's label set and training documents, after ``data.max_examples`` and
    ``data.empty_share`` (applied per folder, seeded: the same selection every call)."""
    if cfg.data.train:
        raise NerftError("data.train and data.mixture exclude each other: list the train folder in data.mixture")
    if cfg.data.lexicon_hints:
        raise NerftError("data.lexicon_hints does not go with data.mixture (one lexicon per label set)")
    parts = []
    for name in cfg.data.mixture:
        folder = Path(name).expanduser()
        if not (folder / "train.jsonl").is_file():
            raise NerftError(f"data.mixture: {folder} has no train.jsonl; pass folders written by nerft prepare")
        docs = read_documents(folder / "train.jsonl")[:cfg.data.max_examples or None]
        if cfg.data.empty_share is not None:
            docs = limit_empty_documents(docs, cfg.data.empty_share, cfg.optim.seed)
        parts.append((_folder_labels(folder), docs))
    return parts


def _load_mixture(cfg: TrainConfig, main: bool) -> tuple[list[Document], list[Document], Lexicon]:
    """``load_training_documents`` for ``data.mixture``: every folder's documents in turn; the lexicon and (unless
    ``data.dev``) the dev documents of the first folder, whose label set the run is saved with."""
    parts = mixture_parts(cfg)
    first = Path(cfg.data.mixture[0]).expanduser()
    lexicon = Lexicon.from_documents(read_documents(first / "train.jsonl")[:cfg.data.max_examples or None])
    dev = dev_file(cfg.data)
    dev_docs = read_documents(dev)[:cfg.eval.dev_docs] if dev else []
    if main:
        print("nerft train: data.mixture: " + ", ".join(f"{name} {len(docs)} documents ({len(labels)} labels)"
                                                         for name, (labels, docs) in zip(cfg.data.mixture, parts,
                                                                                         strict=True)))
    return [d for _, docs in parts for d in docs], dev_docs, lexicon


def few_shot_documents(docs: Sequence[Document], n: int, labels: LabelSet, max_chars: int = 50) -> list[Document]:
    """``n`` worked examples for the prompt, a pure function of ``docs`` and their order: short documents
    (``max_chars`` at most) with entities: first, for each label in label-set order that the chosen ones do not
    show yet, the first document that has it (so LOC is shown next to GPE), then the next ones in order; returned
    in data order."""
    short = [d for d in docs if d.entities and len(d.text) <= max_chars]
    chosen: list[Document] = []
    for code in labels.codes:
        if any(e.label == code for d in chosen for e in d.entities):
            continue
        first = next((d for d in short if d not in chosen and any(e.label == code for e in d.entities)), None)
        if first is not None and len(chosen) < n:
            chosen.append(first)
    chosen += [d for d in short if d not in chosen][:n - len(chosen)]
    return sorted(chosen, key=short.index)


def few_shot_block(examples: Sequence[Document], fmt: OutputFormat, labels: LabelSet) -> str:
    """The worked examples as the system prompt shows them: each text, then the answer the model should write."""
    return "\n".join(["示例："] + [f"输入：{d.text}\n输出：\n{fmt.render(d.entities, labels)}" for d in examples])


def build_training_prompt(cfg: TrainConfig, labels: LabelSet, train_docs: Sequence[Document] = ()) -> Prompt:
    """The prompt the run trains with (and saves for predict/serve): built from the label set and format, or
    ``data.system_prompt``; ``data.examples_in_prompt`` worked examples from ``train_docs`` appended to it."""
    prompt = build_prompt(labels, cfg.data.output_format, cfg.data.prompt_style, cfg.data.describe_labels)
    if cfg.data.lexicon_hints < 0:
        raise NerftError(f"data.lexicon_hints must be >= 0, got {cfg.data.lexicon_hints}")
    prompt = dataclasses.replace(prompt, hints=cfg.data.lexicon_hints)
    if cfg.data.system_prompt:
        prompt = dataclasses.replace(prompt, system=cfg.data.system_prompt)
    if cfg.data.examples_in_prompt:
        if cfg.data.mixture:  # worked examples from this label set's documents only
            train_docs = [d for d in train_docs if d.entities and all(e.label in labels for e in d.entities)]
        shots = few_shot_documents(train_docs, cfg.data.examples_in_prompt, labels)
        if not shots:
            raise NerftError(f"data.examples_in_prompt {cfg.data.examples_in_prompt}: no training document of at "
                             "most 50 characters with entities to show")
        block = few_shot_block(shots, get_format(cfg.data.output_format), labels)
        prompt = dataclasses.replace(prompt, system=f"{prompt.system}\n{block}")
    return prompt


def check_shared_prefix(cfg: TrainConfig) -> None:
    if not cfg.data.shared_prefix:
        return
    if cfg.data.packing:
        raise NerftError("data.shared_prefix and data.packing do not go together: choose one")
    if cfg.optim.gradient_checkpointing:
        # transformers drops the KV cache inside checkpointed layers, so the rows could not see the prefix
        raise NerftError("data.shared_prefix does not work with optim.gradient_checkpointing: turn one off")


def encode_mixture(cfg: TrainConfig, tokenizer: Any, end_id: int) -> EncodedData:
    """Every ``data.mixture`` folder's documents, each prompted with its own folder's label set (and worked
    examples from its own documents); with ``data.mixture_balance`` equal, as many examples of each folder as of
    the largest."""
    out, parts = EncodedData([]), []
    fmt = get_format(cfg.data.output_format)
    for group, (labels, docs) in enumerate(mixture_parts(cfg)):
        prompt = build_training_prompt(cfg, labels, docs)
        out.prompts.append((labels, prompt))
        part = encode_documents(docs, tokenizer, prompt, fmt, labels, end_id, cfg.data.max_length,
                                cfg.data.overlong)
        for ex in part.examples:
            ex.group = group
        if cfg.data.shared_prefix:  # each folder's own prompt prefix: its batches compute it once
            out.prefix_lens.append(mark_shared_prefix(part.examples, shared_prefix_ids(tokenizer, prompt)))
        parts.append(part)
    if cfg.data.mixture_balance == "equal":
        _balance(parts, cfg.optim.seed)
    for part in parts:
        out.examples += part.examples
        out.overlong += part.overlong
        out.supervised_tokens += sum(1 for ex in part.examples for t in ex.labels if t != IGNORE)
    return out


def _balance(parts: list[EncodedData], seed: int) -> None:
    """data.mixture_balance equal: every part's examples repeated whole as often as they fit into the largest
    part's count, the rest a seeded sample of them, so each part holds as many examples as the largest."""
    target = max(len(part.examples) for part in parts)
    for i, part in enumerate(parts):
        n = len(part.examples)
        if n == 0 or n == target:
            continue
        extra = random.Random(seed * 1_000_003 + i).sample(part.examples, target % n)
        part.examples = part.examples * (target // n) + extra


def encode_training_data(cfg: TrainConfig, docs: list[Document], tokenizer: Any, prompt: Prompt,
                         labels: LabelSet, main: bool, lexicon: Lexicon | None = None) -> EncodedData:
    """Encode the training documents as configured; with ``data.shared_prefix`` each example records how many
    leading tokens are the prompt prefix every example shares; with ``data.lexicon_hints`` each prompt carries
    its text's hint from ``lexicon``."""
    check_shared_prefix(cfg)
    end_id = answer_end_id(tokenizer, cfg.data.end_token)
    if cfg.data.mixture:  # ``docs`` are the folders' documents in turn: each folder's prompt and label set
        data = encode_mixture(cfg, tokenizer, end_id)
    else:
        data = encode_documents(docs, tokenizer, prompt, get_format(cfg.data.output_format), labels, end_id,
                                cfg.data.max_length, cfg.data.overlong, lexicon)
    if data.overlong and main:
        action = {"drop": "dropped", "keep": "kept whole", "truncate": "truncated"}[cfg.data.overlong]
        warnings.warn(f"{data.overlong} of {len(docs)} training examples exceed data.max_length "
                      f"{cfg.data.max_length} tokens and were {action} (data.overlong)", stacklevel=2)
    if not data.examples:
        raise NerftError(f"no training examples left (all {len(docs)} exceed max_length {cfg.data.max_length})")
    if cfg.data.mixture and cfg.data.mixture_balance == "equal" and main:
        counts = Counter(ex.group for ex in data.examples)
        logger.info(f"data.mixture_balance equal: {counts[0]} examples from each folder per epoch")
    if cfg.data.shared_prefix and cfg.data.mixture:  # marked per folder; every micro-batch holds one folder's
        if main:
            logger.info("data.shared_prefix: " + " / ".join(map(str, data.prefix_lens)) + " prompt tokens (one "
                        "per data.mixture folder) computed once per micro-batch, each micro-batch from one folder")
    elif cfg.data.shared_prefix:
        n = mark_shared_prefix(data.examples, shared_prefix_ids(tokenizer, prompt))
        if main:
            logger.info(f"data.shared_prefix: {n} prompt tokens computed once per micro-batch")
    return data
