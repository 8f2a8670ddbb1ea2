"""``nerft train``: LoRA instruction fine-tuning of a chat LLM into an NER model.

The package's pieces, each importable on its own: ``config`` (the typed recipe), ``data`` (documents -> token
ids with the loss on the answer only, batch order, collation), ``step`` (the loss and one optimizer step),
``schedule`` (learning rate, training clock), ``checkpoint`` (safetensors + JSON, resumable, no pickle),
``evaluation`` (dev/test through the predictor), ``loop`` (``train()``), ``cli`` (the subcommand).
"""

from __future__ import annotations

from .cli import SHORTCUTS, register
from .config import DataConfig, EvalConfig, OptimConfig, OutputConfig, TrainConfig
from .data import (
    IGNORE,
    EncodedData,
    Example,
    answer_end_id,
    collate,
    encode_document,
    encode_documents,
    epoch_batches,
    limit_empty_documents,
)
from .loop import Trainer, TrainingInterrupted, train
from .schedule import TrainingClock, build_schedule
from .step import StepStats, SupervisedLoss, train_step

__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "EvalConfig", "OutputConfig", "train", "register",
           "SHORTCUTS", "IGNORE", "Example", "EncodedData", "answer_end_id", "encode_document", "encode_documents",
           "epoch_batches", "collate", "limit_empty_documents", "SupervisedLoss", "train_step", "build_schedule",
           "TrainingClock", "TrainingInterrupted", "Trainer", "StepStats"]

