"""Opening a model for prediction, export or serving: the one factory that turns load options into a
``Predictor`` of the chosen backend. ``location.locate_model`` finds the model (nothing loaded), its tokenizer is
loaded once here, and each backend is built from (location, tokenizer); the weights are loaded through the same
loader ``train`` uses (``modeling.load_model``).

Backends are imported only when chosen, so that a CPU install never needs vLLM and reading options never needs
torch. They import ``location`` and ``base``, never this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..labels import LabelSet
from ..modeling import load_model, resolve_device
from ..prompts import Prompt
from ..rundir import INFO_FILE, check_adapter_folder, target_pattern
from ..schema import NerftError
from .location import ModelLocation, decoding_options, load_location_tokenizer, locate_model
from .options import LoadOptions, PredictOptions

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig

BACKENDS = ("transformers", "vllm", "openai", "llamacpp", "ct2")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    labels: LabelSet
    prompt: Prompt
    name: str
    location: ModelLocation


def load_weights(where: ModelLocation, merge: bool = True):
    """The model at ``where`` in eval mode (a causal LM, or a ``TaggerModel`` for a tagger); its adapter merged in
    memory unless ``merge`` is False."""
    if where.info is not None and where.info.kind == "tagger":
        return load_tagger(where, merge)
    lm = load_model(where.weights, resolve_device(where.weights))
    return with_adapter(lm, where, merge).eval()


def with_adapter(model: Any, where: ModelLocation, merge: bool = True) -> Any:
    """``model`` with ``where``'s adapter put on (and merged unless ``merge`` is False), checked first."""
    if where.adapter is None:
        return model
    from peft import PeftModel

    if not (where.adapter / "adapter_config.json").is_file():
        raise NerftError(f"{where.adapter} holds no peft adapter (adapter_config.json)")
    check_adapter_folder(where.adapter)  # a tampered config or truncated weights: one line, not a hang
    config = resolved_targets_config(where.adapter, model)
    given: dict[str, Any] = {"config": config} if config else {}
    try:
        model = PeftModel.from_pretrained(model, str(where.adapter), **given)
    except (ValueError, KeyError, RuntimeError) as exc:  # shapes or names that do not fit the base model
        raise NerftError(f"cannot put the adapter {where.adapter} on {where.weights.name_or_path}: "
                         f"{str(exc).splitlines()[0][:160]}") from None
    return model.merge_and_unload() if merge else model


def load_tagger(where: ModelLocation, merge: bool = True):
    """The ``TaggerModel`` of a tagger run (base body + adapter, which holds the head too) or of its merged
    export (body folder + the head's file), rebuilt from the settings its nerft.json records."""
    from ..tagger.model import HEAD_FILE, TaggerSettings, build_tagger, load_head

    info = where.info
    assert info is not None
    settings = TaggerSettings.from_dict(info.tagger or {}, source=f"{where.home}/{INFO_FILE}")
    body = load_model(where.weights, resolve_device(where.weights), lm_head=False)
    tagger = build_tagger(body, info.labels.codes, settings)
    if where.adapter is not None:
        return with_adapter(tagger, where, merge).eval()
    load_head(tagger, (where.home or Path(where.weights.name_or_path)) / HEAD_FILE)
    return tagger.eval()


def resolved_targets_config(adapter: Path, lm: torch.nn.Module, seconds: float = 2.0) -> PeftConfig | None:
    """The adapter's peft config with a ``target_modules`` regular expression replaced by the module names it
    matches, found with the ``regex`` module under a time limit (None when the config lists names): peft would
    run the pattern through ``re.fullmatch`` on every module name without one."""
    import regex
    from peft import PeftConfig

    pattern = target_pattern(adapter)
    if pattern is None:
        return None
    deadline, names = time.monotonic() + seconds, []
    try:
        for name, _ in lm.named_modules():
            if regex.fullmatch(pattern, name, timeout=max(deadline - time.monotonic(), 0.001)):
                names.append(name)
    except TimeoutError:
        raise NerftError(f"{adapter / 'adapter_config.json'}: matching target_modules {pattern[:60]!r} against the "
                         f"model's module names took over {seconds:g} s; list the module names instead") from None
    config = PeftConfig.from_pretrained(str(adapter))
    config.target_modules = names
    return config


def load_model_and_tokenizer(opts: LoadOptions, merge: bool = True) -> LoadedModel:
    """Load a model for inference; the adapter is merged in memory unless ``merge`` is False."""
    where = locate_model(opts)
    labels, prompt = where.labels_and_prompt
    tokenizer = load_location_tokenizer(where)
    return LoadedModel(load_weights(where, merge), tokenizer, labels, prompt, where.name, where)


def load_predictor(model: str | Path | None = None, *, base: str | Path | None = None,
                   adapter: str | Path | None = None, backend: str = "transformers", device: str = "auto",
                   dtype: str = "auto", revision: str | None = None, run_decoding: bool = True,
                   autocast: str = "auto", **options: Any):
    """A ``Predictor`` for a run directory, an exported folder, or base + adapter (any PredictOptions field as a
    keyword: ``batch_size``, ``constrained``, ...), decoding as the run's decoding.yaml says where the keywords
    do not (``run_decoding=False``: as the keywords and the defaults say)."""
    opts = LoadOptions(model=str(model) if model is not None else None, base=str(base) if base else None,
                       revision=revision, adapter=str(adapter) if adapter else None, device=device or "auto",
                       dtype=dtype or "auto", backend=backend, run_decoding=run_decoding,  # type: ignore[arg-type]
                       autocast=autocast)  # type: ignore[arg-type]
    PredictOptions(**options)  # an unknown keyword is a TypeError, as always
    given = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    return open_predictor(opts, decoding_options(opts, given))


def open_predictor(opts: LoadOptions, options: PredictOptions):
    """The one factory: locate the model, load its tokenizer, build the chosen backend from both."""
    if opts.backend not in BACKENDS:
        raise NerftError(f"unknown backend {opts.backend!r}; choose {', '.join(BACKENDS)}")
    where = locate_model(opts)
    if where.info is not None and where.info.kind == "crf":  # chosen by the folder (nerft distill), not a flag
        from .crf_backend import CrfPredictor

        return CrfPredictor.from_location(where, options)
    if where.info is not None and where.info.kind == "tagger":  # chosen by the folder (task: tag), not a flag
        if opts.backend != "transformers":
            raise NerftError(f"{opts.model} is a tagger (task: tag): it runs on the transformers backend, not "
                             f"{opts.backend} (leave --backend out)")
        from .tagger_backend import TaggerPredictor

        tokenizer = load_location_tokenizer(where)
        tagger = load_weights(where)
        return TaggerPredictor.from_location(where, tokenizer, tagger, options,
                                             autocast=inference_autocast(opts.autocast, tagger))
    if opts.backend == "vllm":
        from .vllm_backend import VllmPredictor

        VllmPredictor.check_device(where)  # before the tokenizer: a CPU machine is told at once
        if where.adapter is not None:  # vLLM reads the adapter itself: the same checks as load_weights first
            check_adapter_folder(where.adapter)
        return VllmPredictor.from_location(where, load_location_tokenizer(where), opts, options)
    tokenizer = load_location_tokenizer(where)
    if opts.backend == "openai":
        from .openai_backend import OpenAIPredictor

        return OpenAIPredictor.from_location(where, tokenizer, opts.openai, options)
    if opts.backend == "llamacpp":
        from .llamacpp_backend import LlamaCppPredictor

        return LlamaCppPredictor.from_location(where, tokenizer, opts.llamacpp, options)
    if opts.backend == "ct2":
        from .ct2_backend import CT2Predictor

        return CT2Predictor.from_location(where, tokenizer, opts.ct2, options)
    from .transformers_backend import TransformersPredictor

    model = load_weights(where)
    return TransformersPredictor.from_location(where, tokenizer, model, options,
                                               autocast=inference_autocast(opts.autocast, model))


AUTOCAST_MIN_PARAMETERS = 50_000_000  # below this, casts and Python cost more than bf16 matmuls save


def inference_autocast(setting: str, model: torch.nn.Module, speedup: Callable[[], float] | None = None,
                       min_parameters: int = AUTOCAST_MIN_PARAMETERS) -> torch.dtype | None:
    """The dtype to run ``model``'s transformer blocks in under torch.autocast, or None (``LoadOptions.autocast``):
    as training's ``optim.autocast`` decides it (``speedup``: the CPU's bf16/fp32 matmul ratio, measured when not
    given), except that ``auto`` on a CPU leaves models under ``min_parameters`` alone."""
    from ..modeling import bf16_matmul_speedup, resolve_autocast

    param = next(model.parameters())
    if setting == "auto" and param.device.type == "cpu" and \
            sum(p.numel() for p in model.parameters()) < min_parameters:
        return None
    return resolve_autocast(setting, param.device, param.dtype, speedup or bf16_matmul_speedup)[0]
