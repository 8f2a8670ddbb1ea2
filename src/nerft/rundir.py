"""The self-describing model directory that ``train`` writes and ``predict``/``evaluate``/``serve``/``export`` read.

Layout of a run directory::

    RUN/
      nerft.json        what a predictor needs: base model, label set, prompt (system text, user prefix, style,
                        output format), max lengths, nerft version; ``merged: true`` in an exported folder
      adapter/          the LoRA adapter (peft: adapter_config.json + adapter_model.safetensors); absent if merged
      tokenizer/        the tokenizer (with its chat template)
      config.yaml       the resolved training config
      labels.json       the label set (also inside nerft.json)
      metrics.json      dev/test metrics, train summary
      train_log.jsonl   one line per logged step
      curves.png        loss and dev F1 curves
      checkpoints/      step-N/ folders for --resume

An exported (merged) folder is a standard Hugging Face model folder plus nerft.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .labels import LabelSet
from .prompts import Prompt
from .schema import NerftError, write_json

INFO_FILE = "nerft.json"


@dataclass
class RunInfo:
    base_model: str | None  # hub id or path of the base model; None when the folder holds merged weights
    labels: LabelSet
    prompt: Prompt
    merged: bool = False
    max_length: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nerft_version": __version__,
            "base_model": self.base_model,
            "merged": self.merged,
            "labels": self.labels.to_dict(),
            "prompt": self.prompt.to_dict(),
            "max_length": self.max_length,
            **({"extra": self.extra} if self.extra else {}),
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
        except json.JSONDecodeError as exc:
            raise NerftError(f"{path}: invalid JSON: {exc}") from None
        return cls(
            base_model=d.get("base_model"),
            labels=LabelSet.from_dict(d["labels"], source=str(path)),
            prompt=Prompt.from_dict(d["prompt"]),
            merged=bool(d.get("merged", False)),
            max_length=int(d.get("max_length", 512)),
            extra=d.get("extra", {}),
        )


def adapter_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "adapter"


def tokenizer_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tokenizer"
