"""What a training task decides (``TrainConfig.task``), so that one ``Trainer`` runs both: how documents become
examples, which model is trained and how its loss is computed, how a batch is laid out, and how dev documents are
predicted. ``generate``: the LLM writes its answer (``data``, ``step.SupervisedLoss``); ``tag``: the LLM tags every
character in one forward pass (``tagging``, ``nerft.tagger``)."""

from __future__ import annotations

from typing import Any

import torch

from ..labels import LabelSet
from ..lexicon import Lexicon
from ..modeling import add_lora, load_model
from ..prompts import Prompt
from ..schema import Document, NerftError
from .config import TrainConfig


class GenerativeTask:
    """The LLM answers with its entities: chat prompt + answer, loss on the answer tokens."""

    kind = "llm"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def encode(self, docs: list[Document], tokenizer: Any, prompt: Prompt, labels: LabelSet, main: bool,
               lexicon: Lexicon):
        from .data import encode_training_data

        return encode_training_data(self.cfg, docs, tokenizer, prompt, labels, main, lexicon)

    def build_model(self, labels: LabelSet, device: torch.device):
        """(the peft model to train, the base model's config)."""
        base = load_model(self.cfg.model, device)
        return add_lora(base, self.cfg.lora, self.cfg.optim.gradient_checkpointing), getattr(base, "config", None)

    def loss_module(self, model: Any, autocast: torch.dtype | None) -> torch.nn.Module:
        from .step import SupervisedLoss

        return SupervisedLoss(model, autocast)

    def collate(self, examples: list, pad_id: int) -> dict[str, torch.Tensor]:
        from .data import collate

        return collate(examples, pad_id, self.cfg.data.packing, self.cfg.data.shared_prefix)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def predict(self, model: Any, tokenizer: Any, prompt: Prompt, labels: LabelSet, docs: list[Document],
                lexicon: Lexicon, constrained: bool, autocast: torch.dtype | None
                ) -> tuple[list[Document], dict[str, int]]:
        from .evaluation import predict_documents

        return predict_documents(model, tokenizer, prompt, labels, docs, self.cfg.eval.batch_size,
                                 self.cfg.eval.max_new_tokens, lexicon, constrained=constrained)

    def run_info(self) -> dict[str, Any]:
        """What nerft.json records beyond the common fields (``RunInfo`` keywords)."""
        return {}


class TaggingTask(GenerativeTask):
    """The LLM tags: token ids of the text, a gold tag per character, the body + LoRA + a tag head."""

    kind = "tagger"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        prompt_only = [f"data.{key}" for key in ("mixture", "packing", "shared_prefix", "lexicon_hints",
                                                 "examples_in_prompt") if getattr(cfg.data, key)]
        if prompt_only:
            raise NerftError(f"task tag reads the text alone (no prompt, no answer): {', '.join(prompt_only)} "
                             "apply to task generate only; leave them out")

    def encode(self, docs: list[Document], tokenizer: Any, prompt: Prompt, labels: LabelSet, main: bool,
               lexicon: Lexicon):
        from ..tagger.scheme import TagScheme
        from .tagging import encode_tagging

        data = encode_tagging(docs, tokenizer, TagScheme(tuple(labels.codes), self.cfg.tagger.scheme),
                              self.cfg.tagger)
        if not data.examples:
            raise NerftError(f"no training examples: none of the {len(docs)} documents has text")
        return data

    def build_model(self, labels: LabelSet, device: torch.device):
        from ..tagger.model import build_tagger

        body = load_model(self.cfg.model, device, lm_head=False)
        tagger = build_tagger(body, labels.codes, self.cfg.tagger)
        model = add_lora(tagger, self.cfg.lora, self.cfg.optim.gradient_checkpointing, trained_in_full=["head"],
                         transformer=tagger.body)
        return model, body.config

    def loss_module(self, model: Any, autocast: torch.dtype | None) -> torch.nn.Module:
        from .tagging import TaggingLoss

        return TaggingLoss(model, autocast)

    def collate(self, examples: list, pad_id: int) -> dict[str, torch.Tensor]:
        from ..tagger.positions import collate_tags

        return collate_tags(examples, pad_id)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The head at ``tagger.head_lr`` when set, the adapters at ``optim.lr``."""
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if self.cfg.tagger.head_lr is None:
            return [{"params": [p for _, p in trained]}]
        head = [p for n, p in trained if ".head." in f".{n}"]
        rest = [p for n, p in trained if ".head." not in f".{n}"]
        return [{"params": rest}, {"params": head, "lr": self.cfg.tagger.head_lr}]

    def predict(self, model: Any, tokenizer: Any, prompt: Prompt, labels: LabelSet, docs: list[Document],
                lexicon: Lexicon, constrained: bool, autocast: torch.dtype | None
                ) -> tuple[list[Document], dict[str, int]]:
        from ..inference.options import PredictOptions
        from ..inference.tagger_backend import TaggerPredictor

        predictor = TaggerPredictor(model, tokenizer, labels, prompt, PredictOptions(batch_size=self.cfg.eval.batch_size,
                                                                                     window=self.cfg.tagger.max_length),
                                    autocast=autocast)
        predicted = predictor.predict([d.text for d in docs])
        counts = {"parse_failures": 0, "hallucinated": 0, "unfinished": 0}
        return [Document(d.id, d.text, p) for d, p in zip(docs, predicted, strict=True)], counts

    def run_info(self) -> dict[str, Any]:
        return {"kind": self.kind, "tagger": self.cfg.tagger.to_dict()}


def build_task(cfg: TrainConfig) -> GenerativeTask:
    return TaggingTask(cfg) if cfg.task == "tag" else GenerativeTask(cfg)
