"""Builders that turn the model and LoRA config into objects: tokenizer, base model, ``peft.LoraConfig``.

Model sources (``model.name_or_path``):
- a Hugging Face hub id (``Qwen/Qwen2-1.5B-Instruct``), downloaded into the HF cache by transformers;
- ``modelscope:qwen/Qwen2-1.5B-Instruct``, downloaded with ``modelscope.snapshot_download`` (``pip install
  nerft[modelscope]``), useful where the HF hub is slow or blocked;
- a local folder written by ``save_pretrained`` (what the tests and the CPU recipe use);
- a GGUF file (``path/to/model.gguf``) or a folder/hub id plus ``model.gguf_file``; transformers dequantises it
  (``pip install nerft[gguf]``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from .config import opt
from .schema import NerftError

if TYPE_CHECKING:
    from transformers import AutoModel, PreTrainedModel

TUTORIAL_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELSCOPE_PREFIX = "modelscope:"


@dataclass
class ModelConfig:
    name_or_path: str = opt("Qwen/Qwen2-1.5B-Instruct",
                            "hub id, modelscope:<id>, a local model folder, or a .gguf file", path=True)
    gguf_file: str | None = opt(None, "GGUF file name inside name_or_path (when it is a folder or hub id)")
    revision: str | None = opt(None, "hub revision (branch, tag or commit)")
    dtype: str = opt("auto", "weights/compute dtype: auto, fp32, bf16 or fp16 (or float32, bfloat16, float16); "
                             "auto = bf16 on a CUDA GPU that supports it, fp32 on CPU (faster there)")
    device: str = opt("auto", "auto (CUDA if available, else CPU), cpu, cuda or cuda:N; ignored under a launcher")
    attn_implementation: str = opt("sdpa", "attention kernel: sdpa, eager or flash_attention_2")
    trust_remote_code: bool = opt(False, "run Python code shipped with the model (only for sources you trust)")
    load_in_4bit: bool = opt(False, "QLoRA: load the base model in 4-bit NF4 with bitsandbytes (CUDA only)")


@dataclass
class LoraSettings:
    r: int = opt(8, "LoRA rank")
    alpha: int = opt(32, "LoRA alpha (scaling = alpha / r)")
    dropout: float = opt(0.1, "dropout on the LoRA input")
    target_modules: list[str] = opt(help="linear layers that get adapters", factory=lambda: list(TUTORIAL_TARGET_MODULES))
    bias: Literal["none", "all", "lora_only"] = opt("none", "which biases to train")
    modules_to_save: list[str] = opt(help="modules trained in full and saved with the adapter (e.g. embed_tokens "
                                          "and lm_head of an untied model that must learn new tokens)", factory=list)
    top_layers: int | None = opt(None, "adapt only the top N decoder layers: the backward pass stops below them "
                                       "(cheaper steps, fewer trainable weights); default: every layer")


def resolve_source(cfg: ModelConfig) -> tuple[str, str | None]:
    """(path or hub id for from_pretrained, gguf file name or None); downloads a modelscope: source."""
    source, gguf = cfg.name_or_path, cfg.gguf_file
    if source.startswith(MODELSCOPE_PREFIX):
        try:
            from modelscope import snapshot_download
        except ImportError:
            raise NerftError(
                f"{source!r} needs the modelscope package: pip install 'nerft[modelscope]' "
                "(or download the model yourself and pass its folder)"
            ) from None
        source = snapshot_download(source[len(MODELSCOPE_PREFIX):], revision=cfg.revision or None)
    path = Path(os.path.expanduser(source))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NerftError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name
    if path.exists():
        if not path.is_dir():
            raise NerftError(f"model path {path} is neither a folder nor a .gguf file")
        if not gguf and not (path / "config.json").is_file():
            raise NerftError(f"model folder {path} holds no config.json: not a model (a hub id, a model folder or "
                             "a .gguf file is expected)")
        return str(path), gguf
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise NerftError(f"model folder {path} does not exist")
    return source, gguf


def resolve_device(cfg: ModelConfig) -> torch.device:
    """``auto``: the CUDA GPU when there is one, else the CPU."""
    if cfg.device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg.device)
    except (RuntimeError, ValueError):
        raise NerftError(f"unknown device {cfg.device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NerftError(f"device {cfg.device!r} asked for, but no CUDA GPU is available; use cpu or auto")
    return device


def base_model_record(cfg: ModelConfig, loaded_config: Any = None) -> dict[str, Any]:
    """How a run names its base model so that it reopens from any folder, on any machine that reaches the same
    base: a local folder or GGUF file by its absolute path, a hub id with its revision (the exact commit loaded,
    when transformers reports it), a ``modelscope:`` id as given."""
    source = cfg.name_or_path
    record: dict[str, Any] = {"name_or_path": source, "revision": cfg.revision, "gguf_file": cfg.gguf_file}
    if source.startswith(MODELSCOPE_PREFIX):
        return record
    path = Path(os.path.expanduser(source))
    if path.exists():
        record["name_or_path"] = str(path.resolve())
    elif record["revision"] is None:
        record["revision"] = hub_commit(source) or getattr(loaded_config, "_commit_hash", None)
    return record


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit of ``repo_id`` (at ``revision``, default main) that the local Hugging Face cache holds: what a
    load just used. None when it is not cached (or not a hub id)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision or "main")
    except Exception:  # noqa: BLE001 - an id the hub library rejects has no cached commit
        return None
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    return snapshot.name if snapshot.parent.name == "snapshots" else None


DTYPES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "bf16": "bf16", "bfloat16": "bf16",
          "fp16": "fp16", "float16": "fp16", "half": "fp16", "auto": "auto"}
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def canonical_dtype(dtype: str | None) -> str:
    """One dtype vocabulary everywhere: auto, fp32, bf16, fp16, or the torch spellings (float32, bfloat16, ...)."""
    name = DTYPES.get(str(dtype or "auto").lower().removeprefix("torch."))
    if name is None:
        raise NerftError(f"unknown dtype {dtype!r}; choose auto, fp32, bf16 or fp16 (float32, bfloat16, float16)")
    return name


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA with bf16 support, else fp32 (on CPU fp32 LoRA training is ~1.4x faster than bf16)."""
    name = canonical_dtype(dtype)
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return _TORCH_DTYPES[name]


def bf16_matmul_speedup(n: int = 1024, repeats: int = 4) -> float:
    """How much faster an n x n matmul runs in bf16 than in fp32 on this CPU (best of ``repeats`` after a warm-up):
    whether bf16 pays here is a property of the CPU (native bf16 instructions, the BLAS build), so it is measured."""
    import time

    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.float32) / max(best(torch.bfloat16), 1e-9)


def resolve_autocast(setting: str, device: torch.device, weight_dtype: torch.dtype,
                     speedup: Callable[[], float] = bf16_matmul_speedup) -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None, why) for ``optim.autocast``; ``speedup`` is the CPU's measured bf16/fp32 ratio."""
    if setting == "off":
        return None, "off"
    if weight_dtype != torch.float32:
        return None, f"off: the weights are already {str(weight_dtype).removeprefix('torch.')}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 (CUDA)"
        if setting == "bf16":
            raise NerftError("optim.autocast bf16: this GPU does not support bfloat16")
        return None, "off: this GPU has no bf16"
    if setting == "bf16":
        return torch.bfloat16, "bf16 (asked for)"
    ratio = speedup()
    if ratio >= 1.25:
        return torch.bfloat16, f"bf16: bf16 matmuls measured {ratio:.2f}x faster than fp32 on this CPU"
    return None, f"off: bf16 matmuls measured {ratio:.2f}x the speed of fp32 on this CPU"


GENERIC_FAST_TOKENIZERS = ("PreTrainedTokenizerFast", "TokenizersBackend")  # the latter as transformers 5 saves it


def auto_tokenizer(path: str | Path, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained``, except for a local folder whose tokenizer_config.json names the generic
    tokenizers-backed class: that loads as ``PreTrainedTokenizerFast``. transformers 5 otherwise takes the class from
    the folder's config.json (Qwen2Tokenizer for a Qwen2 model), which rebuilds a byte-level BPE and, for any other
    tokenizer.json (the demo's character tokenizer), encodes text to nothing."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = Path(path) / "tokenizer_config.json"
    if not kwargs.get("gguf_file") and config.is_file():
        try:
            cls = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
        except (OSError, ValueError, AttributeError):
            cls = None
        if cls in GENERIC_FAST_TOKENIZERS:
            return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path, **kwargs)


def with_pad_token(tokenizer: Any) -> Any:
    """Qwen2 pads with <|endoftext|>; a tokenizer without a pad token gets that, or its eos token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def load_tokenizer(cfg: ModelConfig, source: str | None = None):
    """The model's tokenizer, with a pad token (Qwen2 pads with <|endoftext|>)."""
    path, gguf = resolve_source(cfg) if source is None else (source, None)
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        tok = auto_tokenizer(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **kwargs)
    except OSError as exc:
        raise NerftError(f"cannot load a tokenizer from {path}: {exc}") from None
    return with_pad_token(tok)


def load_model(cfg: ModelConfig, device: torch.device | None = None, lm_head: bool = True):
    """The base causal LM on ``device`` (default from ``cfg.device``), in the resolved dtype, in eval mode;
    ``lm_head=False``: its body only (``AutoModel``: embeddings, decoder layers, norm; what the tagger reads)."""
    from transformers import AutoModel, AutoModelForCausalLM

    device = device or resolve_device(cfg)
    dtype = resolve_dtype(cfg.dtype, device)
    path, gguf = resolve_source(cfg)
    kwargs: dict = {"dtype": dtype, "attn_implementation": cfg.attn_implementation,
                    "trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
    if gguf:
        kwargs["gguf_file"] = gguf
    if cfg.load_in_4bit:
        if device.type != "cuda":
            raise NerftError("model.load_in_4bit (QLoRA) needs a CUDA GPU; on CPU train plain LoRA in fp32")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise NerftError("QLoRA needs bitsandbytes: pip install 'nerft[qlora]'") from None
        compute = dtype if dtype != torch.float32 else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": device}
    try:
        loader = AutoModelForCausalLM if lm_head else _body_class(AutoModel, path, kwargs)
        model = loader.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise NerftError(f"cannot load a model from {path}: {exc}") from None
    if not cfg.load_in_4bit:
        model.to(device)  # type: ignore[arg-type]  # transformers' typing of to() asks for a model
    return model.eval()


def _body_class(auto_model: type[AutoModel], path: str, kwargs: dict) -> type[AutoModel | PreTrainedModel]:
    """AutoModel's class for ``path`` told that a causal LM checkpoint's ``lm_head`` is left out on purpose (else
    transformers prints a loading report naming it as unexpected at every tagger load); missing or mismatched
    weights are still reported. AutoModel itself where the class cannot be told (remote code, a GGUF file).
    Puts the config it read into ``kwargs`` for ``from_pretrained``."""
    from transformers import AutoConfig

    if kwargs.get("gguf_file") or kwargs.get("trust_remote_code"):
        return auto_model
    try:
        config = AutoConfig.from_pretrained(path, revision=kwargs.get("revision"))
        # private to transformers: if it moves, the report is back (typed with tokenizer pairs as values too)
        cls: type[PreTrainedModel] = auto_model._model_mapping[type(config)]  # type: ignore[assignment]
    except (OSError, ValueError, KeyError, AttributeError):
        return auto_model
    kwargs["config"] = config  # read once: from_pretrained takes it instead of reading config.json again
    ignored = [*(cls._keys_to_ignore_on_load_unexpected or ()), r"(^|\.)lm_head\."]
    return type(cls.__name__, (cls,), {"_keys_to_ignore_on_load_unexpected": ignored, "__module__": cls.__module__})


def build_lora(cfg: LoraSettings, num_layers: int | None = None, trained_in_full: Sequence[str] = (),
               causal_lm: bool = True):
    """A ``peft.LoraConfig`` for causal-LM fine-tuning (defaults = the tutorial's: r 8, alpha 32, dropout 0.1).
    ``cfg.top_layers`` needs the model's ``num_layers``: the adapters go on layers num_layers - N .. num_layers - 1.
    ``trained_in_full``: more modules to save with the adapter (the tagger's head); ``causal_lm=False``: a model
    that is not a causal LM (the tagger), which peft wraps as a plain module."""
    from peft import LoraConfig, TaskType

    layers = None
    if cfg.top_layers is not None:
        if num_layers is None:
            raise NerftError("lora.top_layers needs the model's number of layers")
        if not 1 <= cfg.top_layers <= num_layers:
            raise NerftError(f"lora.top_layers is {cfg.top_layers}; the model has {num_layers} layers (choose 1-{num_layers})")
        layers = list(range(num_layers - cfg.top_layers, num_layers))
    to_save = [*cfg.modules_to_save, *trained_in_full]
    return LoraConfig(task_type=TaskType.CAUSAL_LM if causal_lm else None, r=cfg.r, lora_alpha=cfg.alpha,
                      lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules), bias=cfg.bias,
                      inference_mode=False, modules_to_save=to_save or None, layers_to_transform=layers)


def add_lora(model: Any, cfg: LoraSettings, gradient_checkpointing: bool = False,
             trained_in_full: Sequence[str] = (), transformer: Any = None):
    """Wrap a base model with fresh LoRA adapters (k-bit models are prepared for training first). ``transformer``:
    the transformers model inside ``model`` when ``model`` is not one itself (the tagger's body): checkpointing and
    k-bit preparation apply to it; ``trained_in_full``: modules saved whole with the adapter (``build_lora``)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    inner = model if transformer is None else transformer
    if getattr(inner, "is_loaded_in_4bit", False):  # in place; returns the model it was given
        inner = prepare_model_for_kbit_training(inner, use_gradient_checkpointing=gradient_checkpointing)
        model = inner if transformer is None else model
    elif gradient_checkpointing:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = getattr(getattr(inner, "config", None), "num_hidden_layers", None)
    return get_peft_model(model, build_lora(cfg, layers, trained_in_full, causal_lm=transformer is None))
