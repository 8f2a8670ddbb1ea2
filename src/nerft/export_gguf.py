"""``nerft export --output-format gguf``: the merged model as one GGUF file for llama.cpp (and Ollama, through the
``Modelfile`` written beside it).

The merged Qwen2 weights are written with the ``gguf`` package's ``GGUFWriter``: Hugging Face tensor names mapped
to llama.cpp's by ``gguf.TensorNameMap`` (``MODEL_ARCH.QWEN2``), the hyperparameters from config.json, and the
tokenizer as llama.cpp reads a GPT-2-style byte-level BPE: every token of the model's vocabulary (ids the tokenizer
does not use become unused ``[PAD<id>]`` entries, as the embedding has more rows than the tokenizer has tokens), its
type (special tokens are control tokens), the merges, the end-of-turn / padding ids and the exact chat template.
``f16``/``f32`` are written directly; ``q8_0`` and ``q4_k_m`` are written as f32 and quantized with llama.cpp's
own quantizer (``llama_cpp.llama_model_quantize``, ``pip install 'nerft[llamacpp]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .schema import NerftError, atomic_write

GGUF_QUANTS = ("q8_0", "q4_k_m", "f16", "f32")
DEFAULT_GGUF_QUANT = "q8_0"
MODELFILE = "Modelfile"


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def _gguf():
    try:
        import gguf
    except ImportError:
        raise NerftError("nerft export --output-format gguf needs the gguf package: pip install 'nerft[llamacpp]'") from None
    return gguf


def _hparams(writer, config: dict) -> None:
    rope = config.get("rope_parameters") or {}
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    writer.add_rope_freq_base(float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))


def _tokens(gguf, tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
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


def check_gguf_tokenizer(tokenizer) -> None:
    """A NerftError unless ``tokenizer`` is one a GGUF file can carry for llama.cpp (a BPE with its merges)."""
    _merges(tokenizer)


def _merges(tokenizer) -> list[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise NerftError(f"GGUF export needs a fast (tokenizers) tokenizer; this one is {type(tokenizer).__name__}")
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE" or not model.get("merges"):
        raise NerftError(f"GGUF export needs a byte-level BPE tokenizer with its merges (Qwen2's); this one is "
                         f"{model.get('type')}{' without merges' if model.get('type') == 'BPE' else ''}: llama.cpp "
                         "could not load it")
    return [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def _tokenizer(gguf, writer, tokenizer, n_vocab: int) -> None:
    from .generation import end_of_turn_id, pad_token_id

    tokens, types = _tokens(gguf, tokenizer, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")  # Qwen2's pre-tokenisation regex, which nerft's tokenizers share
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(tokenizer))
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


def _tensors(gguf, writer, state: dict, config: dict, f16: bool) -> None:
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.QWEN2, int(config["num_hidden_layers"]))
    tied = bool(config.get("tie_word_embeddings"))
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp's qwen2 reads the output projection from token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise NerftError(f"GGUF export: no llama.cpp name for the tensor {hf_name} (not a Qwen2 model?)")
        data = tensor.detach().float().cpu().numpy()
        if f16 and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(name, data)


def write_gguf(merged: Path, path: Path, f16: bool = True) -> None:
    """The merged folder ``merged`` (safetensors, config.json, tokenizer) as one GGUF file: 2-D weights in f16
    (``f16=False``: f32), norms and biases in f32."""
    from safetensors.torch import load_file

    from .modeling import auto_tokenizer

    gguf = _gguf()
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "qwen2":
        raise NerftError(f"GGUF export writes Qwen2 models; {merged} is {config.get('model_type')!r}")
    state: dict = {}
    for shard in sorted(merged.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    tokenizer = auto_tokenizer(merged)  # as nerft reads it (transformers 5 would rebuild it from config.json)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2])
    writer.add_name(merged.name)
    _hparams(writer, config)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer(gguf, writer, tokenizer, int(config["vocab_size"]))
    _tensors(gguf, writer, state, config, f16)
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
    from .rundir import RunInfo

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
