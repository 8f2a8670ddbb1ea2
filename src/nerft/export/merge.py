"""The merge behind ``nerft export``: the LoRA adapter merged into the base weights, written as a standard Hugging
Face folder (``export_model``), then converted for an engine when asked (``export_for_engine``: GGUF through
``gguf_file``, CTranslate2 through ``ct2``), the run's decoding carried along (``copy_decoding``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import atomic_dir, atomic_write, check_output_apart, write_errors
from ..lexicon import LEXICON_FILE, Lexicon
from ..rundir import DECODING_FILE, RunInfo
from ..schema import NerftError

if TYPE_CHECKING:
    from ..inference.location import ModelLocation
    from ..inference.options import LoadOptions


def export_merged(model: str | Path | None, output: str | Path, *, base: str | Path | None = None,
                  adapter: str | Path | None = None, dtype: str = "auto", device: str = "cpu",
                  revision: str | None = None, overwrite: bool = False) -> Path:
    """Merge and write; returns the output folder."""
    from ..inference.options import LoadOptions

    return export_model(LoadOptions(model=str(model) if model else None, base=str(base) if base else None,
                                    revision=revision, adapter=str(adapter) if adapter else None, device=device,
                                    dtype=dtype), output, overwrite=overwrite)


def export_model(load: LoadOptions, output: str | Path, overwrite: bool = False,
                 repo_id: str | None = None) -> Path:
    """``repo_id``: the hub repository the folder is meant for (the model card's examples load it)."""
    from ..generation import stop_token_ids
    from ..inference.loading import load_model_and_tokenizer
    from ..inference.location import locate_model
    from .model_card import model_card

    output = Path(output)
    where = locate_model(load)
    check_output_apart(output, export_inputs(load, where))
    if output.exists() and not overwrite:
        raise NerftError(f"{output} exists; pass --overwrite to replace it")
    if where.info is not None and where.info.kind == "crf":
        raise NerftError(f"{load.model} holds a character CRF (nerft distill): it has no adapter to merge; "
                         "predict and serve load the folder as it is")
    if where.adapter is None and where.info is not None and where.info.merged:
        raise NerftError(f"{load.model} is already a merged folder")
    loaded = load_model_and_tokenizer(load, merge=True)
    lm, info = loaded.model, where.info
    tagger = info.tagger if info is not None and info.kind == "tagger" else None
    merged_from = {"base_model": where.weights.name_or_path, "revision": where.weights.revision,
                   "adapter": str(where.adapter.resolve()) if where.adapter else None}
    with write_errors(output), atomic_dir(output) as tmp:  # a full disk: one error naming the folder
        if tagger is not None:  # the body (a plain transformers model) and the head's weights
            from ..tagger.model import save_merged

            save_merged(lm, tmp)
        else:
            lm.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        if tagger is None and lm.generation_config is not None:
            lm.generation_config.eos_token_id = stop_token_ids(loaded.tokenizer)
            lm.generation_config.save_pretrained(tmp)
        decoding = info.decoding if info is not None and where.decoding is not None else None
        RunInfo(base_model=None, labels=loaded.labels, prompt=loaded.prompt, merged=True,
                max_length=info.max_length if info else 512, merged_from=merged_from, decoding=decoding,
                trained_prompts=info.trained_prompts if info else [], kind=info.kind if info else "llm",
                tagger=tagger).save(tmp)
        run_dir = Path(load.model) if load.model else None  # a run directory has config.yaml and metrics.json
        if run_dir is not None and (run_dir / LEXICON_FILE).is_file():  # --lexicon works on the merged folder too
            shutil.copyfile(run_dir / LEXICON_FILE, tmp / LEXICON_FILE)
        if where.decoding is not None:
            copy_decoding(where.decoding, where.home, tmp)
        with atomic_write(tmp / "README.md") as f:
            f.write(model_card(loaded.labels, loaded.prompt, model_id=repo_id or str(output),
                               merged_from=merged_from, run_dir=run_dir, decoding=decoding, tagger=tagger))
    return output


def export_inputs(load: LoadOptions, where: ModelLocation) -> list[str | None]:
    """Every local file or folder an export reads: the model, base and adapter given, and the base weights the
    run names (the output may be none of them, nor hold nor lie inside one)."""
    return [load.model, load.base, load.adapter, str(where.adapter) if where.adapter else None,
            where.weights.name_or_path]


ENGINE_FORMATS = ("hf", "gguf", "ct2")


def export_for_engine(load: LoadOptions, output: str | Path, fmt: str, quant: str | None = None,
                      overwrite: bool = False, repo_id: str | None = None) -> Path:
    """``--output-format gguf`` (llama.cpp, Ollama) or ``ct2`` (CTranslate2): the merged folder is written to a temporary
    place, converted into ``output``, and its other files (nerft.json, tokenizer, decoding, lexicon, model card)
    copied beside the engine's; ``hf``: the merged folder itself."""
    import tempfile

    if fmt == "hf":
        if quant:
            raise NerftError("--quant goes with --output-format gguf or ct2 (the hf folder keeps the model's dtype)")
        return export_model(load, output, overwrite=overwrite, repo_id=repo_id)
    if fmt not in ENGINE_FORMATS:
        raise NerftError(f"unknown --output-format {fmt!r}; choose {', '.join(ENGINE_FORMATS)}")
    from ..inference.location import locate_model

    where = locate_model(load)
    if where.info is not None and where.info.kind == "tagger":
        raise NerftError(f"{load.model} is a tagger (task: tag): llama.cpp and CTranslate2 generate text and cannot "
                         "run it; export it with --output-format hf (transformers), which predict and serve load")
    from .ct2 import CT2_QUANTS
    from .gguf_file import GGUF_QUANTS

    if quant and quant not in (GGUF_QUANTS if fmt == "gguf" else CT2_QUANTS):
        raise NerftError(f"--quant {quant!r} is not a {fmt} type nerft writes; choose "
                         f"{', '.join(GGUF_QUANTS if fmt == 'gguf' else CT2_QUANTS)}")
    output = Path(output)
    check_output_apart(output, export_inputs(load, where))
    if output.exists() and not overwrite:
        raise NerftError(f"{output} exists; pass --overwrite to replace it")
    if fmt == "gguf":  # before the merge: a tokenizer llama.cpp cannot read is refused in a second
        from ..inference.location import load_location_tokenizer
        from .gguf_file import check_gguf_tokenizer

        check_gguf_tokenizer(load_location_tokenizer(where))
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.merged.", dir=output.parent) as tmp:
        merged = export_model(load, Path(tmp) / "merged", repo_id=repo_id)
        with write_errors(output), atomic_dir(output) as dest:
            if fmt == "gguf":
                from .gguf_file import DEFAULT_GGUF_QUANT, convert_gguf

                convert_gguf(merged, dest, quant or DEFAULT_GGUF_QUANT)
            else:
                from .ct2 import DEFAULT_CT2_QUANT, convert_ct2

                convert_ct2(merged, dest, quant or DEFAULT_CT2_QUANT)
            for f in merged.iterdir():  # the engine's own files (ct2's config.json) are kept
                if f.is_file() and f.suffix != ".safetensors" and not (dest / f.name).exists():
                    shutil.copyfile(f, dest / f.name)
    return output


def copy_decoding(decoding: dict[str, Any], run_dir: Path | None, folder: Path) -> None:
    """The run's decoding as ``folder``/decoding.yaml; the lexicon it names is the folder's lexicon.json when it is
    the run's own, else copied beside as decoding-lexicon.json."""
    import yaml

    data = dict(decoding)
    if data.get("lexicon"):
        source = Path(data["lexicon"]).resolve()
        own = run_dir is not None and source in (run_dir.resolve(), (run_dir / LEXICON_FILE).resolve())
        data["lexicon"] = LEXICON_FILE if own else "decoding-lexicon.json"
        if not (folder / data["lexicon"]).is_file():
            Lexicon.load(source).save(folder / data["lexicon"])
    with atomic_write(folder / DECODING_FILE) as f:
        f.write("# the decoding nerft train chose on dev for the exported run (nerft predict/serve start from it)\n")
        yaml.safe_dump(data, f, allow_unicode=True, sort_keys=False)
