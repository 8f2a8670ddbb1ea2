"""``nerft export --output-format ct2``: the merged model converted for CTranslate2 (``--backend ct2``).

CTranslate2's own converter (``ctranslate2.converters.TransformersConverter``) reads the merged Hugging Face folder
and writes model.bin (weights in the ``--quant`` type: int8 by default), config.json and vocabulary.json; the
folder keeps the run's nerft.json, tokenizer, decoding and model card beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_write
from ..schema import NerftError

CT2_QUANTS = ("int8", "int8_float32", "int8_bfloat16", "int16", "bfloat16", "float16", "float32")
DEFAULT_CT2_QUANT = "int8"


def convert_ct2(merged: Path, dest: Path, quant: str = DEFAULT_CT2_QUANT) -> Path:
    """Convert the merged folder ``merged`` into ``dest`` (CTranslate2's model.bin, config.json, vocabulary.json)."""
    if quant not in CT2_QUANTS:
        raise NerftError(f"--quant {quant!r} is not a CTranslate2 type; choose {', '.join(CT2_QUANTS)}")
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError:
        raise NerftError("nerft export --output-format ct2 needs CTranslate2: pip install 'nerft[ct2]'") from None
    TransformersConverter(str(merged), low_cpu_mem_usage=True).convert(str(dest), quantization=quant, force=True)
    # CTranslate2's config.json takes the Hugging Face one's place; without its model_type, transformers loading the
    # tokenizer beside it warns of a Mistral regex (wrongly: the tokens are the same)
    hf = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    ct2 = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    ct2.update({k: hf[k] for k in ("model_type", "transformers_version") if k in hf})
    # a tokenizer without a bos or unk token (Qwen's) on a base whose converter copies them as they are (Llama's)
    # leaves null there, which CTranslate2 cannot load (its Qwen converters write a stand-in: so does this; nerft
    # passes prompt ids itself, so the bos token is never added)
    if ct2.get("bos_token") is None:
        ct2["bos_token"] = ct2.get("eos_token")
    if ct2.get("unk_token") is None:
        ct2["unk_token"] = ""
    with atomic_write(dest / "config.json") as f:
        json.dump(ct2, f, indent=2)
    return dest / "model.bin"
