"""Where a model is: resolving ``--model/--base/--adapter`` into weights, adapter, tokenizer folders, label set and
prompt, without loading any weights. Every backend is built from a ``ModelLocation`` and its tokenizer
(``loading.open_predictor`` is the one factory); ``export`` reads it too.

What can be located:
- a run directory written by ``nerft train``: its nerft.json names the base model (an absolute path, or a hub id
  and revision), so it reopens from any folder; ``--base`` overrides it;
- a folder written by ``nerft export`` (merged weights + nerft.json);
- a peft adapter folder (the tutorial's ``checkpoint-N``) on the base it records or on ``--base``;
- a plain base model (``--base``), optionally with ``--adapter``.
A folder without nerft.json is read with the tutorial's label set and prompt.

A run or export may hold decoding.yaml, the decoding ``nerft train`` chose on dev (``ModelLocation.decoding``):
``decoding_options`` starts every command's ``PredictOptions`` from it, under ``--config`` and the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config as cfglib
from ..labels import LabelSet, ccfbdci_labels, load_label_set
from ..lexicon import LEXICON_FILE, Lexicon
from ..modeling import ModelConfig, auto_tokenizer, canonical_dtype, load_tokenizer, with_pad_token
from ..prompts import Prompt, build_prompt, prompt_for_labels
from ..rundir import DECODING_FILE, INFO_FILE, BaseModelRef, RunInfo, adapter_dir, tokenizer_dir
from ..schema import NerftError
from .options import LoadOptions, PredictOptions

log = logging.getLogger("nerft.inference")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def tutorial_prompt() -> tuple[LabelSet, Prompt]:
    labels = ccfbdci_labels()
    return labels, build_prompt(labels, "tutorial", "tutorial")


@dataclass
class ModelLocation:
    """Where the weights, adapter and tokenizer of a model are, and the label set and prompt to use."""

    weights: ModelConfig  # the base model, or the merged folder
    adapter: Path | None
    tokenizer_dirs: list[Path] = field(default_factory=list)  # tried in order before the weights' own tokenizer
    info: RunInfo | None = None
    name: str = "nerft"

    home: Path | None = None  # the folder of nerft.json (a run, an export): its lexicon.json is there too
    # the decoding.yaml of the folder located (``run_decoding``: input paths absolute); None: none, or ignored
    decoding: dict[str, Any] | None = None

    @property
    def labels_and_prompt(self) -> tuple[LabelSet, Prompt]:
        return (self.info.labels, self.info.prompt) if self.info else tutorial_prompt()

    def hint_lexicon(self, prompt: Prompt) -> Lexicon | None:
        """The lexicon a model trained with lexicon hints reads (None for the others)."""
        if not prompt.hints:
            return None
        if self.home is not None and (self.home / LEXICON_FILE).is_file():
            return Lexicon.load(self.home)
        raise NerftError(f"this model was trained with lexicon hints (data.lexicon_hints {prompt.hints}); its "
                         f"{LEXICON_FILE} is missing from {self.home or 'its folder'}")


def _weights(ref: BaseModelRef, opts: LoadOptions, near: Path | None = None) -> ModelConfig:
    source = ref.name_or_path
    relative = not source.startswith(("/", "~")) and ":" not in source and not Path(source).exists()
    if relative and near is not None:  # runs written before nerft recorded absolute paths
        for folder in [near, *near.resolve().parents]:
            if (folder / source).exists():
                source = str(folder / source)
                break
    return ModelConfig(name_or_path=source, revision=ref.revision, gguf_file=ref.gguf_file,
                       dtype=canonical_dtype(opts.dtype), device=opts.device)


def _override(opts: LoadOptions) -> BaseModelRef | None:
    return BaseModelRef(opts.base, opts.revision) if opts.base else None


def locate_model(opts: LoadOptions) -> ModelLocation:
    """Resolve ``--model/--base/--adapter`` into a ModelLocation (nothing is loaded yet)."""
    where = _locate(opts)
    where.decoding = run_decoding(opts)
    if opts.label_set:
        where.info = _with_label_set(where, opts.label_set)
    return where


def _with_label_set(where: ModelLocation, spec: str) -> RunInfo:
    """The located model's run info with another label set and its prompt rebuilt for it (``--label-set``)."""
    if where.info is None or where.info.kind != "llm":
        raise NerftError("--label-set needs a fine-tuned LLM that answers (task generate), written by nerft train "
                         "or export: a tagger or a CRF knows only the tags it was trained on")
    labels = load_label_set(spec)
    prompt = where.info.trained_prompt(labels) or prompt_for_labels(where.info.prompt, where.info.labels, labels)
    return dataclasses.replace(where.info, labels=labels, prompt=prompt)


def run_decoding(opts: LoadOptions) -> dict[str, Any] | None:
    """The decoding.yaml of the folder ``--model`` (else ``--adapter``) names; None without one, or with
    ``--no-run-decoding``. Reads that one file only: a command can merge it before anything else is checked."""
    folder = opts.model or opts.adapter
    if not opts.run_decoding or folder is None:
        return None
    return read_decoding(Path(folder).expanduser() / DECODING_FILE)


def read_decoding(path: Path) -> dict[str, Any] | None:
    """The options a decoding.yaml sets (validated; its input paths absolute, read from its own folder), or None
    when there is no such file."""
    if not path.is_file():
        return None
    data = cfglib.load_yaml(path)
    try:
        options = cfglib.build_config(PredictOptions, config_path=str(path))
    except cfglib.ConfigError as exc:
        raise cfglib.ConfigError(f"{path}: {exc}") from None
    return {k: v for k, v in cfglib.to_dict(options).items() if k in data}


def decoding_options(opts: LoadOptions, given: argparse.Namespace | dict[str, Any] | None = None,
                     config_path: str | None = None) -> PredictOptions:
    """A command's decoding options: the run's decoding (``run_decoding``), then a ``--config`` file, then the
    flags ``given``, each overriding the one before field by field."""
    run = run_decoding(opts)
    if run and opts.label_set:  # the run's per-label thresholds and lexicon name the run's own labels
        run = {k: v for k, v in run.items() if k not in ("label_min_scores", "lexicon")}
    options = cfglib.build_config(PredictOptions, given, config_path=config_path, base=run)
    if run and run.get("constrained") and options.constrained and opts.backend != "transformers":
        if cfglib.build_config(PredictOptions, given, config_path=config_path).constrained:
            raise NerftError(f"--constrained: the {opts.backend} backend cannot constrain decoding (only "
                             "transformers can)")
        # only the run's decoding asked for it: its thresholds apply to free answers (on the CPU recipe's run, the
        # same F1 within noise: benchmarks/results/throughput.md); say so once
        log.warning("%s/%s was chosen on dev with constrained decoding, which the %s backend cannot do: decoding "
                    "freely with its thresholds (--no-run-decoding ignores them)", opts.model or opts.adapter,
                    DECODING_FILE, opts.backend)
        options = dataclasses.replace(options, constrained=False)
    return options


def _locate(opts: LoadOptions) -> ModelLocation:
    if opts.model is not None:
        folder = Path(opts.model).expanduser()
        if (folder / INFO_FILE).is_file():
            return _locate_nerft_folder(folder, opts)
        if (folder / "adapter_config.json").is_file():  # an adapter folder, e.g. the tutorial's checkpoint-N
            return _locate_adapter(folder, opts)
        if not folder.exists():
            raise NerftError(f"model folder {folder} does not exist")
        raise NerftError(f"{folder} is neither a nerft model folder ({INFO_FILE}) nor a peft adapter folder")
    if opts.adapter is not None:
        return _locate_adapter(Path(opts.adapter).expanduser(), opts)
    if opts.base is None:
        raise NerftError("pass a model folder (--model) or a base model (--base) with an --adapter")
    return ModelLocation(_weights(_override(opts), opts), None, [], None, Path(opts.base).name)  # type: ignore[arg-type]


def _locate_nerft_folder(folder: Path, opts: LoadOptions) -> ModelLocation:
    info = RunInfo.load(folder)
    if info.kind == "crf":  # a character CRF (nerft distill): no weights or tokenizer to locate
        return ModelLocation(ModelConfig(name_or_path=str(folder.resolve())), None, [], info, folder.name, folder)
    ref: BaseModelRef | None
    if info.merged:
        ref = BaseModelRef(str(folder.resolve()))
        return ModelLocation(_weights(ref, opts), None, [folder, tokenizer_dir(folder)], info, folder.name, folder)
    ref = _override(opts) or info.base_model
    if ref is None:
        raise NerftError(f"{folder}/{INFO_FILE} names no base model; pass --base")
    adapter = Path(opts.adapter) if opts.adapter else adapter_dir(folder)
    return ModelLocation(_weights(ref, opts, near=folder), adapter, [tokenizer_dir(folder), folder], info,
                         folder.name, folder)


def _locate_adapter(adapter: Path, opts: LoadOptions) -> ModelLocation:
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise NerftError(f"{adapter} holds no peft adapter (adapter_config.json)")
    ref = _override(opts)
    if ref is None:
        try:
            recorded = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError) as exc:
            raise NerftError(f"{config_file}: {exc}") from None
        if not recorded:
            raise NerftError(f"the adapter {adapter} does not name its base model; pass --base")
        ref = BaseModelRef(recorded, recorded_revision(adapter))
    info = RunInfo.load(adapter) if (adapter / INFO_FILE).is_file() else None
    return ModelLocation(_weights(ref, opts, near=adapter), adapter, [adapter, tokenizer_dir(adapter)], info,
                         adapter.name, adapter if info is not None else None)


def recorded_revision(adapter: Path) -> str | None:
    try:
        return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("revision")
    except (OSError, ValueError):
        return None


def load_location_tokenizer(where: ModelLocation):
    """The tokenizer saved with the run (or adapter) when there is one, else the base model's."""
    for folder in where.tokenizer_dirs:
        if folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES):
            try:
                return with_pad_token(auto_tokenizer(str(folder)))
            except Exception as exc:  # an empty or truncated tokenizer.json: tokenizers' own error type, OSError, ...
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise NerftError(f"cannot load the tokenizer in {folder} ({first[:160]}); its files are damaged: "
                                 "restore them from the base model's folder") from None
    return load_tokenizer(where.weights)
