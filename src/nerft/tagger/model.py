"""The LLM as a tagger: a decoder LLM's body (no lm_head), optionally its first N layers only, attention causal or
bidirectional in its last k layers, and a head that scores every tag at every character (``TagHead``: one output
slot per character of a token, ``nerft.tagger.positions``); decoded by Viterbi over valid tag sequences, with a
learned CRF transition layer or without (``nerft.tagger.crf``).

``TaggerSettings`` is the ``tagger:`` section of a training recipe and is saved in the run's nerft.json, so the
same model is rebuilt at prediction time. ``build_tagger`` turns a loaded causal LM into a ``TaggerModel``; LoRA
adapters go on its body and the head is trained in full (peft's ``modules_to_save``), so the run's adapter folder
holds both and every peft code path (checkpoints, best adapter, merge) works on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import opt
from ..schema import NerftError
from .crf import constraint_scores, log_partition, marginals, sequence_nll, viterbi
from .positions import IGNORE, Positions
from .scheme import Scheme, TagScheme


@dataclass
class TaggerSettings:
    """The tagger's architecture (``task: tag``); recorded in the run, read back by every stage."""

    scheme: Scheme = opt("bioes", "tags: bio (B-, I-, O) or bioes (+ E- closing a mention, S- a one-character one)")
    positions: Positions = opt("token", "token: the text as the model reads it, each token tagging each of its "
                                        "characters from its own output slot (boundaries inside a token stay "
                                        "reachable); char: every character a position of its own (~1.5x the "
                                        "positions on Chinese)")
    attention: Literal["causal", "bidirectional"] = opt(
        "bidirectional", "causal: the pre-trained mask (a character sees only what precedes it); bidirectional: "
                         "every position sees the whole window in the last tagger.bidirectional_layers layers")
    bidirectional_layers: int | None = opt(None, "attention bidirectional: in the last k layers only (null: all)")
    decoder: Literal["viterbi", "crf"] = opt("crf", "viterbi: per-character softmax trained by cross-entropy, "
                                                    "decoded as the best valid tag sequence; crf: a learned "
                                                    "transition layer trained by the sequence likelihood")
    layers: int | None = opt(None, "use only the first N decoder layers of the base model (faster; null: all)")
    slots: int = opt(8, "positions token: output slots per token (its characters past the last share it)")
    max_length: int = opt(256, "longest training window in token positions (longer documents are cut at "
                               "sentence ends); prediction windows: predict's --window")
    head_lr: float | None = opt(None, "learning rate of the head (default: optim.lr)")

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise NerftError(f"tagger.slots must be >= 1, got {self.slots}")
        if self.layers is not None and self.layers < 1:
            raise NerftError(f"tagger.layers must be >= 1, got {self.layers}")
        if self.bidirectional_layers is not None and self.bidirectional_layers < 0:
            raise NerftError(f"tagger.bidirectional_layers must be >= 0, got {self.bidirectional_layers}")
        if self.max_length < 8:
            raise NerftError(f"tagger.max_length must be >= 8, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        from ..config import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "nerft.json") -> TaggerSettings:
        from ..config import ConfigError, from_dict

        try:
            return from_dict(cls, data)
        except (ConfigError, TypeError) as exc:
            raise NerftError(f"{source}: the tagger settings are not valid ({exc})") from None


class TagHead(torch.nn.Module):
    """Tag scores of each character from its token's hidden state: ``slots`` linear maps (one per character
    position in a token), and the chain scores (``crf``: learned, added to the scheme's constraints)."""

    allowed_trans: torch.Tensor  # buffers (register_buffer), declared for the type checker
    allowed_start: torch.Tensor
    allowed_end: torch.Tensor

    def __init__(self, hidden: int, scheme: TagScheme, slots: int, crf: bool):
        super().__init__()
        self.n_tags, self.slots = len(scheme), slots
        self.emit = torch.nn.Linear(hidden, slots * self.n_tags)
        torch.nn.init.normal_(self.emit.weight, std=0.02)
        torch.nn.init.zeros_(self.emit.bias)
        trans, start, end = constraint_scores(scheme)
        self.register_buffer("allowed_trans", trans, persistent=False)
        self.register_buffer("allowed_start", start, persistent=False)
        self.register_buffer("allowed_end", end, persistent=False)
        self.crf = crf
        if crf:
            self.trans = torch.nn.Parameter(torch.zeros(self.n_tags, self.n_tags))
            self.start = torch.nn.Parameter(torch.zeros(self.n_tags))
            self.end = torch.nn.Parameter(torch.zeros(self.n_tags))

    def forward(self, hidden: torch.Tensor, char_token: torch.Tensor, char_slot: torch.Tensor) -> torch.Tensor:
        """Emissions B x C x T in fp32: ``hidden`` B x L x H, ``char_token``/``char_slot`` B x C."""
        picked = hidden.gather(1, char_token.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        with torch.autocast(hidden.device.type, enabled=False):
            scores = self.emit(picked.float()).view(*char_token.shape, self.slots, self.n_tags)
        scores = scores.gather(2, char_slot[..., None, None].expand(-1, -1, 1, self.n_tags)).squeeze(2)
        return scores if self.crf else torch.log_softmax(scores, dim=-1)

    def chain(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions, start, end) scores of the decoder: the constraints, plus the learned ones (crf)."""
        if not self.crf:
            return self.allowed_trans, self.allowed_start, self.allowed_end
        return self.allowed_trans + self.trans, self.allowed_start + self.start, self.allowed_end + self.end


class TaggerModel(torch.nn.Module):
    """``body`` (a transformers base model: embeddings + decoder layers + norm) and ``head``."""

    def __init__(self, body: Any, scheme: TagScheme, settings: TaggerSettings):  # a transformers decoder
        super().__init__()
        self.body, self.scheme, self.settings = body, scheme, settings
        self.head = TagHead(body.config.hidden_size, scheme, settings.slots if settings.positions == "token" else 1,
                            settings.decoder == "crf")
        self._key_mask: torch.Tensor | None = None
        n = len(body.layers)
        k = n if settings.bidirectional_layers is None else min(settings.bidirectional_layers, n)
        self.bidirectional = list(range(n - k, n)) if settings.attention == "bidirectional" else []
        if self.bidirectional and getattr(body.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
            raise NerftError(f"tagger.attention bidirectional needs model.attn_implementation sdpa or eager, not "
                             f"{body.config._attn_implementation}")
        for i in self.bidirectional:
            body.layers[i].register_forward_pre_hook(self._bidirectional_mask, with_kwargs=True)

    @property
    def config(self):  # peft and the trainer read the model's config (name, dtype, layers)
        return self.body.config

    def _bidirectional_mask(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                            ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Pre-hook of a bidirectional layer: its attention sees every real position of the window (padding
        keys masked), in the format the layer's attention function reads (bool for sdpa, additive for eager).
        The mask stays set until the next forward pass, so a recomputation under gradient checkpointing sees it."""
        kwargs["attention_mask"] = self._key_mask
        return args, kwargs

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.bidirectional:
            keys = attention_mask.bool()[:, None, None, :]
            if self.body.config._attn_implementation == "eager":
                keys = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device).masked_fill(
                    ~keys, torch.finfo(torch.float32).min)
            self._key_mask = keys
        return self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, char_token: torch.Tensor,
                char_slot: torch.Tensor) -> torch.Tensor:
        """Emissions B x C x T (fp32) of every character."""
        return self.head(self.hidden_states(input_ids, attention_mask), char_token, char_slot)

    def loss(self, emissions: torch.Tensor, char_mask: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Summed loss over the batch: per-character cross-entropy (viterbi) or the sequence NLL (crf)."""
        if not self.head.crf:
            known = tags != IGNORE
            return -emissions[known].gather(1, tags[known].unsqueeze(1)).sum()
        rows = char_mask[:, 0]  # rows with at least one character
        return sequence_nll(emissions[rows], char_mask[rows], tags[rows], *self.head.chain())

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, char_mask: torch.Tensor) -> tuple[list[list[int]], torch.Tensor]:
        """(the best valid tag sequence of each row, the tag marginals B x C x T)."""
        chain = self.head.chain()
        return viterbi(emissions, char_mask, *chain), marginals(emissions, char_mask, *chain)

    def sequence_score(self, emissions: torch.Tensor, char_mask: torch.Tensor) -> torch.Tensor:
        return log_partition(emissions, char_mask, *self.head.chain())


HEAD_FILE = "tagger_head.safetensors"  # a merged tagger's head, beside its body's weights (nerft export)


def save_merged(tagger: TaggerModel, folder: Path) -> None:
    """A merged tagger as a folder: the body as a plain transformers model (``AutoModel`` loads it; its config
    has the layers kept) and the head's weights in ``HEAD_FILE``."""
    from safetensors.torch import save_file

    tagger.body.save_pretrained(folder, safe_serialization=True)
    save_file({k: v.detach().contiguous() for k, v in tagger.head.state_dict().items()}, str(folder / HEAD_FILE))


def load_head(tagger: TaggerModel, path: Path) -> None:
    """Put the head weights of ``path`` (``save_merged``'s file) into ``tagger``; one error if they do not fit."""
    from safetensors.torch import load_file

    from ..rundir import check_safetensors

    if not path.is_file():
        raise NerftError(f"{path.parent} is a merged tagger without its {HEAD_FILE}")
    check_safetensors(path)
    try:
        tagger.head.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:  # missing, unexpected or misshapen tensors
        raise NerftError(f"{path} does not fit this tagger: {str(exc).splitlines()[0][:160]}") from None


def keep_first_layers(body: Any, n: int | None) -> None:
    """Cut ``body`` to its first ``n`` decoder layers (in place; None: all)."""
    if n is None:
        return
    total = len(body.layers)
    if n > total:
        raise NerftError(f"tagger.layers is {n}; the base model has {total} layers")
    body.layers = torch.nn.ModuleList(list(body.layers)[:n])
    body.config.num_hidden_layers = n
    if getattr(body.config, "layer_types", None):
        body.config.layer_types = list(body.config.layer_types)[:n]


def build_tagger(causal_lm: Any, labels: list[str], settings: TaggerSettings) -> TaggerModel:
    """A ``TaggerModel`` on ``causal_lm``'s body (the lm_head is left behind) for the label codes ``labels``."""
    body = getattr(causal_lm, "model", None)
    if body is None and hasattr(causal_lm, "get_decoder"):
        body = causal_lm.get_decoder()
    if body is None or not hasattr(body, "layers"):
        raise NerftError(f"{type(causal_lm).__name__}: the tagger needs a decoder with .layers (Qwen2, Qwen3, Llama)")
    keep_first_layers(body, settings.layers)
    return TaggerModel(body, TagScheme(tuple(labels), settings.scheme), settings)
