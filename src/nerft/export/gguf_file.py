"""``nerft export --output-format gguf``: the merged model as one GGUF file for llama.cpp (and Ollama, through the
``Modelfile`` written beside it).

The merged weights of a Qwen2/Qwen2.5, Qwen3 or Llama-family model are written with the ``gguf`` package's
``GGUFWriter``: Hugging Face tensor names mapped to llama.cpp's by ``gguf.TensorNameMap`` for the model's
architecture (``ARCHS``; Qwen3's per-head q/k norms included), Llama's q/k projections permuted into the rotary
layout llama.cpp's ``llama`` architecture computes with (as llama.cpp's own ``convert_hf_to_gguf.py`` does; Qwen
models use the NeoX layout, unpermuted), the hyperparameters from config.json (head size written out: Qwen3's is
not hidden / heads), and the tokenizer as llama.cpp reads a GPT-2-style byte-level BPE: every token of the model's vocabulary (ids the tokenizer
does not use become unused ``[PAD<id>]`` entries, as the embedding has more rows than the tokenizer has tokens), its
type (special tokens are control tokens), the merges, its pre-tokenisation (``llama-bpe`` for Llama 3's split, else ``qwen2``), the end-of-turn / padding ids
and the exact chat template.
``f16``/``f32`` are written directly; ``q8_0`` and ``q4_k_m`` are written as f32 and quantized with llama.cpp's
own quantizer (``llama_cpp.llama_model_quantize``, ``pip install 'nerft[llamacpp]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fileio import atomic_write
from ..schema import NerftError

if TYPE_CHECKING:
    from gguf import MODEL_ARCH, GGUFWriter

GGUF_QUANTS = ("q8_0", "q4_k_m", "f16", "f32")
ARCHS = {"qwen2": "QWEN2", "qwen3": "QWEN3", "llama": "LLAMA"}  # config.json model_type -> gguf.MODEL_ARCH name
# Llama 3's pre-tokenisation split (its tokenizer.json); Qwen2's differs only in \p{N} (one digit a piece)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_GGUF_QUANT = "q8_0"
MODELFILE = "Modelfile"


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def _gguf() -> ModuleType:
    try:
        import gguf
    except ImportError:
        raise NerftError("nerft export --output-format gguf needs the gguf package: pip install 'nerft[llamacpp]'") from None
    return gguf


def _arch(gguf: ModuleType, config: dict, merged: Path) -> MODEL_ARCH:
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        raise NerftError(f"GGUF export writes {', '.join(ARCHS)} models; {merged} is {model_type!r}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise NerftError(f"GGUF export: {merged} uses {rope.get('rope_type') or rope.get('type')!r} rope scaling, "
                         "which nerft does not write; convert the merged folder (nerft export --output-format hf) "
                         "with llama.cpp's convert_hf_to_gguf.py")
    return gguf.MODEL_ARCH[ARCHS[model_type]]


def _head_size(config: dict) -> int:
    return int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))


def _hparams(writer: GGUFWriter, config: dict) -> None:
    rope = config.get("rope_parameters") or {}
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    writer.add_rope_freq_base(float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_key_length(_head_size(config))
    writer.add_value_length(_head_size(config))
    writer.add_rope_dimension_count(_head_size(config))


def _tokens(gguf: ModuleType, tokenizer: Any, n_vocab: int) -> tuple[list[str], list[int]]:
    """Every id's token text and llama.cpp token type, for the model's ``n_vocab`` embedding rows."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    if len(by_id) > n_vocab:
        raise NerftError(f"the tokenizer has {len(by_id)} tokens but the model's embedding only {n_vocab} rows")
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def check_gguf_tokenizer(tokenizer: Any) -> None:
    """A NerftError unless ``tokenizer`` is one a GGUF file can carry for llama.cpp (a BPE with its merges)."""
    _merges(_pipeline(tokenizer))


def _pipeline(tokenizer: Any) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise NerftError(f"GGUF export needs a fast (tokenizers) tokenizer; this one is {type(tokenizer).__name__}")
    return json.loads(backend.to_str())


def _pre_tokenizer(pipeline: dict) -> str:
    """llama.cpp's name for the pre-tokenisation of a tokenizer's ``pipeline`` (its tokenizer.json): ``llama-bpe``
    when it splits as Llama 3's, else ``qwen2`` (nerft's own tokenizers split as Qwen2's, or finer: one character a
    piece, which merges never cross)."""
    pre = pipeline.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    patterns = [(s.get("pattern") or {}).get("Regex") for s in steps if s.get("type") == "Split"]
    return "llama-bpe" if LLAMA3_SPLIT in patterns else "qwen2"


def _merges(pipeline: dict) -> list[str]:
    model = pipeline["model"]
    if model.get("type") != "BPE" or not model.get("merges"):
        raise NerftError(f"GGUF export needs a byte-level BPE tokenizer with its merges (Qwen2's); this one is "
                         f"{model.get('type')}{' without merges' if model.get('type') == 'BPE' else ''}: llama.cpp "
                         "could not load it")
    return [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def _tokenizer(gguf: ModuleType, writer: GGUFWriter, tokenizer: Any, n_vocab: int) -> None:
    from ..generation import end_of_turn_id, pad_token_id

    tokens, types = _tokens(gguf, tokenizer, n_vocab)
    pipeline = _pipeline(tokenizer)  # the tokenizer.json, serialised and parsed once
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(pipeline))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(pipeline))
    eot = end_of_turn_id(tokenizer)
    writer.add_eos_token_id(eot)
    writer.add_eot_token_id(eot)
    writer.add_pad_token_id(pad_token_id(tokenizer))
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.convert_tokens_to_ids(
        "<|endoftext|>")
    if isinstance(bos, int) and bos != tokenizer.unk_token_id:
        writer.add_bos_token_id(bos)
    writer.add_add_bos_token(False)  # nerft's prompts are ChatML, without a bos token
    if not isinstance(tokenizer.chat_template, str):
        raise NerftError("the tokenizer has no chat template to write into the GGUF file")
    writer.add_chat_template(tokenizer.chat_template)


def rotary_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """A q/k projection's rows from Hugging Face's rotary layout (each head's first half, then its second) to the
    interleaved pairs llama.cpp's ``llama`` architecture rotates (``convert_hf_to_gguf.py``'s ``permute``)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)


def _tensors(gguf: ModuleType, writer: GGUFWriter, state: dict, config: dict, f16: bool,
             arch: MODEL_ARCH) -> None:
    names = gguf.TensorNameMap(arch, int(config["num_hidden_layers"]))
    tied = bool(config.get("tie_word_embeddings"))
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads the output projection from token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise NerftError(f"GGUF export: no llama.cpp name for the tensor {hf_name} of a "
                             f"{config.get('model_type')} model")
        data = tensor.detach().float().cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith((".q_proj.weight", ".k_proj.weight")):
            data = rotary_permute(data, heads if hf_name.endswith(".q_proj.weight") else kv_heads)
        if f16 and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(name, data)


def write_gguf(merged: Path, path: Path, f16: bool = True) -> None:
    """The merged folder ``merged`` (safetensors, config.json, tokenizer) as one GGUF file: 2-D weights in f16
    (``f16=False``: f32), norms and biases in f32."""
    from safetensors.torch import load_file

    from ..modeling import auto_tokenizer

    gguf = _gguf()
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    arch = _arch(gguf, config, merged)
    state: dict = {}
    for shard in sorted(merged.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    tokenizer = auto_tokenizer(merged)  # as nerft reads it (transformers 5 would rebuild it from config.json)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(merged.name)
    _hparams(writer, config)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer(gguf, writer, tokenizer, int(config["vocab_size"]))
    _tensors(gguf, writer, state, config, f16, arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_gguf(source: Path, dest: Path, quant: str, threads: int = 0) -> None:
    """llama.cpp's own quantizer (through llama-cpp-python): ``source`` (f32/f16 GGUF) -> ``dest`` in ``quant``."""
    try:
        import llama_cpp
    except ImportError:
        raise NerftError(f"--quant {quant} quantizes with llama.cpp: pip install 'nerft[llamacpp]' (or export "
                         "--quant f16 and quantize with llama.cpp's llama-quantize)") from None
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[quant]
    params.nthread = threads
    import ctypes

    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0:
        raise NerftError(f"llama.cpp could not quantize {source} to {quant} (code {rc})")


def ollama_modelfile(gguf_file: str, system: str, stops: list[str], n_ctx: int = 2048) -> str:
    """An Ollama Modelfile: the GGUF, the run's ChatML template as a Go template, its system prompt, greedy
    decoding and the end-of-turn stop tokens. A user message is the prompt's user prefix followed by the text."""
    quoted = system.replace('"""', '\\"\\"\\"')
    lines = [f"FROM ./{gguf_file}",
             'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
             '{{ end }}<|im_start|>assistant\n"""',
             f'SYSTEM """{quoted}"""',
             *[f'PARAMETER stop "{s}"' for s in stops],
             "PARAMETER temperature 0", "PARAMETER top_k 1", f"PARAMETER num_ctx {n_ctx}"]
    return "\n".join(lines) + "\n"


def convert_gguf(merged: Path, dest: Path, quant: str = DEFAULT_GGUF_QUANT) -> Path:
    """Write ``dest``/model-QUANT.gguf and ``dest``/Modelfile from the merged folder ``merged``."""
    from ..rundir import RunInfo

    if quant not in GGUF_QUANTS:
        raise NerftError(f"--quant {quant!r} is not a GGUF type nerft writes; choose {', '.join(GGUF_QUANTS)}")
    target = dest / gguf_name(quant)
    if quant in ("f16", "f32"):
        write_gguf(merged, target, f16=quant == "f16")
    else:
        full = dest / ".model-f32.gguf"
        write_gguf(merged, full, f16=False)
        quantize_gguf(full, target, quant)
        full.unlink()
    vocab = (merged / "tokenizer.json").read_text(encoding="utf-8")
    stops = [t for t in ("<|im_end|>", "<|endoftext|>") if json.dumps(t) in vocab]
    prompt = RunInfo.load(merged).prompt
    with atomic_write(dest / MODELFILE) as f:
        f.write(ollama_modelfile(target.name, prompt.system, stops))
    return target
