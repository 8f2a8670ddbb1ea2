"""Other trainers, both ways: the prompt/answer pairs nerft trains on, written for LLaMA-Factory or ms-swift
(``nerft prepare --export-format``), and those trainers' prediction files read back (``nerft evaluate
--pred-format``).

Export (``SftExportConfig``): each document becomes the conversation nerft's ``train`` builds for it: the system
prompt of ``prompts.build_prompt`` (or ``system_prompt``), the user turn ``user_prefix + text``, and the answer
``formats.get_format(output_format).render(entities)``; the same options as ``train``'s ``data.output_format``,
``data.prompt_style``, ``data.describe_labels`` and ``data.system_prompt``. Files go to ``OUT/<export format>/``,
one per split, in the order of ``OUT/<split>.jsonl``:

``llamafactory-alpaca``
    ``train.json``, ...: a JSON array of ``{"instruction", "input", "output", "system"}``. LLaMA-Factory joins
    ``instruction`` and ``input`` with a line break when both are set, so the whole user turn is ``instruction``
    and ``input`` is empty. ``dataset_info.json`` names the splits ``<OUT name>_train`` etc.
``llamafactory-sharegpt``
    ``train.json``, ...: ``{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}], "system"}``, with
    its ``dataset_info.json`` (``formatting: sharegpt``, the columns and tags spelled out).
``messages``
    ``train.jsonl``, ...: ``{"messages": [{"role": "system"}, {"role": "user"}, {"role": "assistant"}]}``, the
    layout of ms-swift's custom datasets and of OpenAI's chat fine-tuning.

What nerft's train does that an exported file cannot: ``data.empty_share`` (subsampling entity-less documents),
``data.max_length`` (the other trainer's cutoff applies instead) and the end token (the trainer's chat template
closes the answer; with ``template: qwen`` that is ``<|im_end|>``, as in nerft).

Predictions (``read_trainer_predictions``):

``llamafactory``
    ``generated_predictions.jsonl`` of ``llamafactory-cli train --do_predict`` (or its ``scripts/vllm_infer.py``):
    ``{"prompt", "predict", "label"}`` per line, in the order of the eval dataset. No ids: line k is gold document
    k, and it must say so: its ``prompt`` (the decoded chat prompt) must contain the gold text (its first
    ``PROMPT_CHECK_CHARS`` characters, should ``cutoff_len`` have cut it), or, for files without prompts, its
    ``label`` must contain every gold mention and be empty exactly when the gold document has no entity.
``swift``
    ``swift infer --result_path`` JSONL: ``{"response", "labels", "messages", ...}`` (``messages`` ends with the
    generated answer; ms-swift 2 wrote ``query``/``label`` instead of ``messages``/``labels``). Matched the same
    way, with the last user message as the prompt.

Each row becomes ``{"id": gold id, "output": predicted answer}``, which ``evaluate`` reads like the raw answers
of ``nerft predict --raw`` (``answers.read_answer``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, check_output_format, opt
from ..fileio import write_json
from ..formats import NONE_ANSWERS, get_format
from ..jsonl import iter_jsonl, write_jsonl
from ..labels import LabelSet
from ..prompts import Prompt, build_prompt
from ..schema import Document, InputError, NerftError

EXPORT_FORMATS = ("llamafactory-alpaca", "llamafactory-sharegpt", "messages")
PRED_FORMATS = ("nerft", "llamafactory", "swift")
PROMPT_CHECK_CHARS = 32


@dataclass
class SftExportConfig:
    """``prepare``'s export of the training conversations for another trainer (the ``export`` section)."""

    format: Literal["llamafactory-alpaca", "llamafactory-sharegpt", "messages"] | None = opt(
        None, "also write the prompt/answer pairs nerft trains on for LLaMA-Factory (alpaca or sharegpt, with "
              "dataset_info.json) or ms-swift/OpenAI (messages JSONL), into OUT/<format>/",
        aliases=("--export-format",))
    output_format: str = opt("compact", "the answer format, as train's data.output_format")
    prompt_style: Literal["nerft", "tutorial"] = opt("nerft", "as train's data.prompt_style")
    describe_labels: bool = opt(False, "as train's data.describe_labels")
    system_prompt: str | None = opt(None, "as train's data.system_prompt: your own system prompt")

    def __post_init__(self) -> None:
        check_output_format(self.output_format, "export.output_format")
        if self.prompt_style == "tutorial" and self.output_format != "tutorial":
            raise ConfigError("export.prompt_style tutorial goes with export.output_format tutorial")


# ----------------------------------------------------------------------------------------------------- export


def export_prompt(labels: LabelSet, cfg: SftExportConfig) -> Prompt:
    """The prompt ``train`` builds from the same options (``train.loop.build_training_prompt``)."""
    prompt = build_prompt(labels, cfg.output_format, cfg.prompt_style, cfg.describe_labels)
    if cfg.system_prompt:
        prompt = Prompt(cfg.system_prompt, prompt.user_prefix, prompt.style, prompt.output_format)
    return prompt


def conversation(doc: Document, labels: LabelSet, prompt: Prompt) -> tuple[str, str, str]:
    """(system, user turn, answer) for one document: exactly what ``train`` feeds the model."""
    answer = get_format(prompt.output_format).render(doc.entities, labels)
    system, user = (m["content"] for m in prompt.messages(doc.text))
    return system, user, answer


def alpaca_record(system: str, user: str, answer: str) -> dict[str, str]:
    return {"instruction": user, "input": "", "output": answer, "system": system}


def sharegpt_record(system: str, user: str, answer: str) -> dict[str, Any]:
    return {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": answer}], "system": system}


def messages_record(system: str, user: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def dataset_info_entry(file_name: str, export_format: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry LLaMA-Factory needs for one exported file (see its data/README.md)."""
    if export_format == "llamafactory-alpaca":
        return {"file_name": file_name,
                "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}}
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}


def write_sft_export(out: Path, splits: dict[str, list[Document]], labels: LabelSet,
                     cfg: SftExportConfig) -> list[Path]:
    """Write ``OUT/<format>/`` for every non-empty split; returns the files written."""
    if cfg.format is None:
        return []
    prompt = export_prompt(labels, cfg)
    folder = out / cfg.format
    make = {"llamafactory-alpaca": alpaca_record, "llamafactory-sharegpt": sharegpt_record,
            "messages": messages_record}[cfg.format]
    files, info = [], {}
    for split, docs in splits.items():
        if not docs:
            continue
        records = [make(*conversation(doc, labels, prompt)) for doc in docs]
        if cfg.format == "messages":
            path = folder / f"{split}.jsonl"
            write_jsonl(path, records)
        else:
            path = folder / f"{split}.json"
            write_json(path, records)
            info[f"{dataset_name(out)}_{split}"] = dataset_info_entry(path.name, cfg.format)
        files.append(path)
    if info:
        write_json(folder / "dataset_info.json", info)
        files.append(folder / "dataset_info.json")
    return files


def dataset_name(out: Path) -> str:
    """A LLaMA-Factory dataset name from the output folder's name (letters, digits, ``_``, ``-`` and ``.``)."""
    return re.sub(r"[^\w.-]+", "_", out.resolve().name) or "nerft"


# ------------------------------------------------------------------------------------------------ predictions


def detect_prediction_format(path: str | Path) -> str:
    """``llamafactory``, ``swift`` or ``nerft``, from the keys of the first line of a predictions JSONL."""
    for _line, obj in iter_jsonl(path):
        if isinstance(obj, dict):
            if "predict" in obj and ("label" in obj or "prompt" in obj):
                return "llamafactory"
            if "response" in obj and ({"labels", "messages", "query", "label"} & obj.keys()):
                return "swift"
        return "nerft"
    return "nerft"


@dataclass
class _TrainerRow:
    line: int
    answer: str
    prompt: str | None  # the chat prompt (or user turn) the answer was generated for, when the file has it
    label: str | None  # the gold answer the file carries, when it has it


def read_trainer_predictions(path: str | Path, pred_format: str,
                             gold: Sequence[Document]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, ``{"id", "output"}``) for each prediction of a LLaMA-Factory or ms-swift file, matched to ``gold`` by
    line order and checked against it (an InputError names the first line that belongs to another document)."""
    if pred_format not in ("llamafactory", "swift"):
        raise NerftError(f"unknown prediction format {pred_format!r}; choose one of auto, {', '.join(PRED_FORMATS)}")
    rows = [_trainer_row(obj, line, path, pred_format) for line, obj in iter_jsonl(path)]
    if len(rows) > len(gold):
        raise InputError(path, rows[len(gold)].line, f"more predictions ({len(rows)}) than gold documents "
                         f"({len(gold)}); {pred_format} predictions are matched to gold by line order")
    for row, doc in zip(rows, gold, strict=False):
        problem = _mismatch(row, doc)
        if problem:
            raise InputError(path, row.line, f"{problem}: it does not belong to gold document {doc.id!r} "
                             f"({_short(doc.text)}); {pred_format} writes predictions in the order of the eval "
                             "dataset, so --gold must be the split exported with `nerft prepare --export-format`, "
                             "in its order")
        yield row.line, {"id": doc.id, "output": row.answer}


def _trainer_row(obj: Any, line: int, path: str | Path, pred_format: str) -> _TrainerRow:
    if not isinstance(obj, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    answer_key = "predict" if pred_format == "llamafactory" else "response"
    answer = obj.get(answer_key)
    if not isinstance(answer, str):
        raise InputError(path, line, f"missing or non-string {answer_key!r} (the generated answer)")
    if pred_format == "llamafactory":
        prompt, label = obj.get("prompt"), obj.get("label")
    else:
        prompt, label = _last_user_turn(obj.get("messages")), obj.get("labels", obj.get("label"))
        if prompt is None and isinstance(obj.get("query"), str):
            prompt = obj["query"]
    return _TrainerRow(line, answer, prompt if isinstance(prompt, str) else None,
                       label if isinstance(label, str) else None)


def _last_user_turn(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else None


def _mismatch(row: _TrainerRow, doc: Document) -> str | None:
    """Why ``row`` cannot be the prediction for ``doc`` (None when it can)."""
    if row.prompt is not None:
        if doc.text in row.prompt or doc.text[:PROMPT_CHECK_CHARS] in row.prompt:
            return None
        return f"its prompt does not contain the gold text ({_short(row.prompt[-60:])})"
    if row.label is not None:
        missing = [e.text for e in doc.entities if e.text not in row.label]
        empty = row.label.strip() in NONE_ANSWERS
        if not missing and empty == (not doc.entities):
            return None
        return f"its label {_short(row.label)} does not match the gold entities"
    return None  # nothing to check against: line order it is


def _short(text: Any) -> str:
    text = str(text)
    return json.dumps(text if len(text) <= 30 else text[:30] + "…", ensure_ascii=False)
