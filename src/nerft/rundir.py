"""The self-describing model directory that ``train`` writes and ``predict``/``evaluate``/``serve``/``export`` read.

Layout of a run directory::

    RUN/
      nerft.json        what a predictor needs: the base model (absolute path of a local folder, or hub id +
                        revision), label set, prompt (system text, user prefix, style, output format), max
                        length, nerft version; ``merged: true`` in an exported folder
      adapter/          the LoRA adapter (peft: adapter_config.json + adapter_model.safetensors); absent if merged
      tokenizer/        the tokenizer (with its chat template)
      config.yaml       the resolved training config
      labels.json       the label set (also inside nerft.json)
      metrics.json      dev/test metrics, train summary
      decoding.yaml     the decoding chosen on dev at the end of training (min-score, per-label min-scores, the
                        lexicon's use; ``nerft tune``'s choice): predict, serve, evaluate --score-with, tune and
                        export start from it (--config and flags override it, --no-run-decoding ignores it);
                        nerft.json's ``decoding`` records it with its dev scores
      lexicon.json      what the training data annotates (``--lexicon``, lexicon hints)
      tune/             the dev answers and the report the choice was made from (tune.md, tune.json, tune.png)
      test_predictions.jsonl   the best adapter's predictions on the test split (for ``nerft evaluate --pred``)
      train_log.jsonl   one line per logged step
      curves.png        loss and dev F1 curves
      checkpoints/      step-N/ folders for --resume

An exported (merged) folder is a standard Hugging Face model folder plus nerft.json. A folder written by
``nerft distill`` holds a character CRF (crf.crfsuite) and a nerft.json with ``kind: crf`` and its ``teacher``. A
run trained with ``task: tag`` has ``kind: tagger`` and its ``tagger`` settings in nerft.json; its adapter folder
holds the tag head beside the LoRA weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .fileio import write_json
from .labels import LabelSet
from .prompts import Prompt
from .schema import NerftError

INFO_FILE = "nerft.json"
DECODING_FILE = "decoding.yaml"


@dataclass
class BaseModelRef:
    """Where a run's base model comes from (see ``modeling.base_model_record``)."""

    name_or_path: str
    revision: str | None = None
    gguf_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "revision": self.revision, "gguf_file": self.gguf_file}

    @classmethod
    def from_value(cls, value: Any, source: str) -> BaseModelRef | None:
        """From nerft.json: an object, or a plain string (runs written before nerft recorded revisions)."""
        if value is None:
            return None
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, dict) or not isinstance(value.get("name_or_path"), str):
            raise NerftError(f"{source}: base_model must be an object with a string name_or_path")
        return cls(value["name_or_path"], value.get("revision"), value.get("gguf_file"))


@dataclass
class RunInfo:
    base_model: BaseModelRef | None  # None when the folder holds merged weights
    labels: LabelSet
    prompt: Prompt
    merged: bool = False
    max_length: int = 512
    merged_from: dict[str, Any] | None = None  # export: the base model and adapter the weights were merged from
    # the decoding chosen on dev at the end of training: {"options": decoding.yaml's mapping, "setting": its
    # description, "dev": {"documents", "answered", "chosen"} with P/R/F1 (0-1) each}; None: none chosen
    decoding: dict[str, Any] | None = None
    # what the folder holds: "llm" (a fine-tuned chat model), "tagger" (the LLM as a tagger, ``task: tag``) or "crf"
    # (a character CRF, ``nerft distill``: its model file is crf.crfsuite and ``teacher`` says which run annotated
    # its silver data and how)
    kind: str = "llm"
    teacher: dict[str, Any] | None = None
    # a data.mixture run: every label set it was trained with and the prompt it was trained with for it (worked
    # examples included), so --label-set naming one of them asks with that very prompt
    trained_prompts: list[tuple[LabelSet, Prompt]] = field(default_factory=list)
    # kind "tagger" (``task: tag``): the tagger's settings (``tagger.model.TaggerSettings``), which rebuild its model
    tagger: dict[str, Any] | None = None

    def trained_prompt(self, labels: LabelSet) -> Prompt | None:
        """The prompt this run was trained with for ``labels`` (same codes and names, in order), or None."""
        for trained, prompt in [*self.trained_prompts, (self.labels, self.prompt)]:
            if trained.codes == labels.codes and trained.names == labels.names:
                return prompt
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "nerft_version": __version__,
            "base_model": self.base_model.to_dict() if self.base_model else None,
            "merged": self.merged,
            "labels": self.labels.to_dict(),
            "prompt": self.prompt.to_dict(),
            "max_length": self.max_length,
            **({"merged_from": self.merged_from} if self.merged_from else {}),
            **({"decoding": self.decoding} if self.decoding else {}),
            **({"kind": self.kind} if self.kind != "llm" else {}),
            **({"teacher": self.teacher} if self.teacher else {}),
            **({"trained_prompts": [{"labels": labels.to_dict(), "prompt": prompt.to_dict()}
                                    for labels, prompt in self.trained_prompts]} if self.trained_prompts else {}),
            **({"tagger": self.tagger} if self.tagger else {}),
        }

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_json(directory / INFO_FILE, self.to_dict())
        write_json(directory / "labels.json", self.labels.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> RunInfo:
        path = Path(directory) / INFO_FILE
        if not path.is_file():
            raise NerftError(
                f"{directory} is not a nerft model folder (no {INFO_FILE}); pass a run directory written by "
                "`nerft train`, a folder written by `nerft export`, or --base/--adapter"
            )
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(d, dict):
                raise NerftError(f"{path}: not a valid nerft.json (a JSON object is expected, found "
                                 f"{type(d).__name__ if d is not None else 'null'})")
            return cls(
                base_model=BaseModelRef.from_value(d.get("base_model"), str(path)),
                labels=LabelSet.from_dict(d["labels"], source=str(path)),
                prompt=Prompt.from_dict(d["prompt"]),
                merged=bool(d.get("merged", False)),
                max_length=int(d.get("max_length", 512)),
                merged_from=d.get("merged_from") or (d.get("extra") or {}).get("merged_from"),
                decoding=d.get("decoding") if isinstance(d.get("decoding"), dict) else None,
                kind=str(d.get("kind", "llm")),
                teacher=d.get("teacher") if isinstance(d.get("teacher"), dict) else None,
                trained_prompts=[(LabelSet.from_dict(t["labels"], source=str(path)), Prompt.from_dict(t["prompt"]))
                                 for t in d.get("trained_prompts") or []],
                tagger=d.get("tagger") if isinstance(d.get("tagger"), dict) else None,
            )
        except json.JSONDecodeError as exc:
            raise NerftError(f"{path}: invalid JSON: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise NerftError(f"{path}: not a valid nerft.json ({type(exc).__name__}: {exc})") from None


def adapter_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "adapter"


def tokenizer_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tokenizer"


ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_MODULE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


def check_adapter_folder(adapter: Path) -> None:
    """Refuse a peft adapter folder whose config or weights would hang, crash or load nonsense, before peft reads
    it: ``target_modules`` module names or one valid regular expression (which the loader resolves to names
    with a time limit: peft would match it with ``re.fullmatch`` against every module name, without one, and a
    catastrophic pattern spins for ever), ``r`` a positive integer, ``lora_alpha`` a positive number, and the
    safetensors file whole."""
    config_file = adapter / ADAPTER_CONFIG
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NerftError(f"{config_file}: not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise NerftError(f"{config_file}: expected a JSON object")
    targets = config.get("target_modules")
    if isinstance(targets, str) and not _MODULE_NAME.fullmatch(targets):
        try:
            re.compile(targets)
        except re.error as exc:
            raise NerftError(f"{config_file}: target_modules is not a valid regular expression ({exc})") from None
        if len(targets) > 2000:
            raise NerftError(f"{config_file}: target_modules is a regular expression of {len(targets)} characters")
    elif not (isinstance(targets, list) and targets and all(isinstance(n, str) and _MODULE_NAME.fullmatch(n)
                                                            for n in targets)) and not isinstance(targets, str):
        raise NerftError(f"{config_file}: target_modules must be a list of module names or one regular expression, "
                         f"got {str(targets)[:80]!r}")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or not 0 < r <= 65536:
        raise NerftError(f"{config_file}: r must be a positive integer, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < float("inf"):
        raise NerftError(f"{config_file}: lora_alpha must be a positive number, got {alpha!r}")
    weights = adapter / ADAPTER_WEIGHTS
    if weights.is_file():
        check_safetensors(weights)


def target_pattern(adapter: Path) -> str | None:
    """The adapter's ``target_modules`` when it is a regular expression (not a module name), else None."""
    targets = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("target_modules")
    return targets if isinstance(targets, str) and not _MODULE_NAME.fullmatch(targets) else None


def check_safetensors(path: Path) -> None:
    """A NerftError unless ``path`` is a whole safetensors file (its header parses and its tensors lie within
    the file: a truncated copy is refused here, not as a traceback when it is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has keys(), no iteration)
                f.get_slice(name)
    except Exception as exc:  # SafetensorError, OSError: damaged, truncated, not safetensors
        raise NerftError(f"{path} is damaged or truncated ({str(exc)[:120]}); restore it or train again") from None
