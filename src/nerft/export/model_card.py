"""The model card (README.md) that ``nerft export`` writes into an exported folder, and its upload to the Hugging
Face Hub (``--push-to-hub``).

The card says what the model is and how to run it, from what the folder and its run directory record: the base
model it was merged from (nerft.json's ``merged_from``), the labels, the exact prompt (system text, user prefix,
output format with an example answer), the training data and recipe (the run's config.yaml and metrics.json, when
it has them), the dev/test scores (metrics.json), and how to load it with nerft, transformers and vLLM. A local
path is shown by its folder name only: a card may be published.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..formats import OutputFormat, get_format
from ..labels import LabelSet
from ..prompts import Prompt
from ..schema import Entity, NerftError

EXAMPLE_TEXT = "……"  # stands for the text to analyse in the code examples


def is_hub_id(name: str) -> bool:
    """``org/name`` that is not a local path: what a card may name as ``base_model``."""
    return (name.count("/") == 1 and not name.startswith((".", "/", "~")) and ":" not in name
            and not Path(name).exists())


def shown_source(name: str | None) -> str:
    if not name:
        return "unknown"
    return f"`{name}`" if is_hub_id(name) else f"a local model folder `{Path(name).name}`"


def read_run_records(run_dir: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.yaml, metrics.json) of a run directory, each {} when absent or unreadable (a card is never worth
    failing an export over)."""
    config: Any = {}
    metrics: Any = {}
    if run_dir is not None:
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            config = {}
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
    return (config if isinstance(config, dict) else {}), (metrics if isinstance(metrics, dict) else {})


def model_card(labels: LabelSet, prompt: Prompt, *, model_id: str, merged_from: dict[str, Any] | None = None,
               run_dir: Path | None = None, decoding: dict[str, Any] | None = None,
               tagger: dict[str, Any] | None = None) -> str:
    """The README.md of an exported folder. ``model_id``: what the code examples load (a hub repo id or the
    folder's path); ``decoding``: the run's decoding record (``RunInfo.decoding``) when the folder carries it;
    ``tagger``: the tagger's settings when the folder holds the LLM as a tagger (``task: tag``)."""
    if tagger is not None:
        return tagger_card(labels, model_id=model_id, merged_from=merged_from, run_dir=run_dir, decoding=decoding,
                           settings=tagger)
    base = (merged_from or {}).get("base_model")
    revision = (merged_from or {}).get("revision")
    config, metrics = read_run_records(run_dir)
    front = {"library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": ["nerft", "named-entity-recognition", "ner", "lora"]}
    if base and is_hub_id(base):
        front["base_model"] = base
    fmt = get_format(prompt.output_format)
    lines = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(), "---", "",
             f"# {model_id.rstrip('/').split('/')[-1]}", "",
             f"A named-entity recogniser: {shown_source(base)}"
             + (f" (revision `{revision}`)" if revision else "")
             + f" fine-tuned with LoRA by nerft {__version__} and merged into the base "
             f"weights. Given a text, it answers in the `{prompt.output_format}` format with the entities it finds; "
             "nerft reads the answer back into entities with character offsets.", "",
             "## Labels", "", "| code | name | description |", "|---|---|---|"]
    lines += [f"| {lab.code} | {lab.name} | {lab.description or ''} |" for lab in labels.labels]
    lines += _prompt_section(labels, prompt, fmt)
    lines += _training_section(config, metrics)
    lines += _decoding_section(decoding)
    lines += _usage_section(model_id, prompt)
    lines += ["## Limitations", "",
              "The model answers only with the labels above and only in the prompt format above; another prompt "
              "gives undefined answers. Mentions it writes that are not in the text are dropped by nerft (counted "
              "as hallucinations). The base model's license and limitations apply.", ""]
    return "\n".join(lines)


def tagger_card(labels: LabelSet, *, model_id: str, merged_from: dict[str, Any] | None, run_dir: Path | None,
                decoding: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    """The card of a merged tagger: no prompt and no answer; its body, head and how it reads a text."""
    base = (merged_from or {}).get("base_model")
    config, metrics = read_run_records(run_dir)
    front = {"library_name": "transformers", "pipeline_tag": "token-classification",
             "tags": ["nerft", "named-entity-recognition", "ner", "lora", "token-classification"]}
    if base and is_hub_id(base):
        front["base_model"] = base
    layers = f"its first {settings['layers']} decoder layers" if settings.get("layers") else "its decoder layers"
    attention = ("causal attention, as pre-trained" if settings.get("attention") == "causal" else
                 "bidirectional attention in " + (f"its last {settings['bidirectional_layers']} layers"
                                                  if settings.get("bidirectional_layers") is not None else
                                                  "every layer"))
    local = "ner-model" if is_hub_id(model_id) else model_id
    lines = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(), "---", "",
             f"# {model_id.rstrip('/').split('/')[-1]}", "",
             f"A named-entity tagger: {shown_source(base)} used as a tagger by nerft {__version__} ({layers}, "
             f"{attention}, LoRA merged into the weights) with a tag head over {settings.get('scheme', 'bio').upper()} "
             f"tags, decoded by {settings.get('decoder', 'viterbi')} over valid tag sequences only. It reads a text "
             "once and tags every character: no prompt, no generated answer, no mention that is not in the text.",
             "", "## Labels", "", "| code | name | description |", "|---|---|---|"]
    lines += [f"| {lab.code} | {lab.name} | {lab.description or ''} |" for lab in labels.labels]
    lines += ["", "## Files", "",
              "- the body: a plain transformers base model (`config.json`, `model.safetensors`; `AutoModel` loads "
              "it) and its tokenizer;",
              f"- `tagger_head.safetensors`: the tag head (one linear map per character slot of a token, "
              f"{'a learned CRF transition layer, ' if settings.get('decoder') == 'crf' else ''}positions "
              f"`{settings.get('positions', 'token')}`);",
              "- `nerft.json`: the labels and the tagger's settings, which nerft rebuilds the model from.", ""]
    lines += _training_section(config, metrics)
    lines += _decoding_section(decoding)
    lines += ["## Use it", "", "```bash", "pip install nerft",
              *([f"huggingface-cli download {model_id} --local-dir {local}"] if is_hub_id(model_id) else []),
              f'nerft predict --model {local} "{EXAMPLE_TEXT}"',
              f"nerft predict --model {local} --input texts.jsonl --output entities.jsonl",
              f"nerft serve --model {local}   # POST /v1/ner", "```", "", "```python",
              "from nerft.inference.loading import load_predictor", "",
              f"tagger = load_predictor({json.dumps(local)})",
              f'print(tagger.predict(["{EXAMPLE_TEXT}"]))  # entities with character offsets and scores', "```", "",
              "## Limitations", "",
              "It tags only the labels above, one label per character (nested mentions are not found). Texts longer "
              "than a window are read in overlapping windows. The base model's license and limitations apply.", ""]
    return "\n".join(lines)


def _prompt_section(labels: LabelSet, prompt: Prompt, fmt: OutputFormat) -> list[str]:
    example = fmt.render([Entity(0, 9, code, "<mention>") for code in labels.codes[:2]], labels)
    user = f"`{prompt.user_prefix}` followed by the text" if prompt.user_prefix else "the text itself"
    none = f"`{fmt.none_text}`" if fmt.none_text else "an empty answer"
    return ["", "## Prompt", "",
            f"Chat messages: a system message, then one user message, {user}. The system message (prompt style "
            f"`{prompt.style}`):", "", "```text", prompt.system, "```", "",
            f"The answer, output format `{prompt.output_format}`, looks like this for two entities:", "",
            "```text", example, "```", "", f"and is {none} when the text has no entity.", ""]


def _section(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _training_section(config: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    data, lora, optim = (_section(config, k) for k in ("data", "lora", "optim"))
    train, dev, test = (_section(metrics, k) for k in ("train", "dev", "test"))
    if not (data or lora or optim or train or dev or test):
        return ["## Training", "", "Not recorded: the folder was exported from a run without config.yaml and "
                "metrics.json.", ""]
    lines = ["## Training", ""]
    splits = [f"{k} `{Path(str(data[k])).name}`" for k in ("train", "dev", "test") if data.get(k)]
    if splits:
        lines.append(f"- data: {', '.join(splits)}" + (f" (first {data['max_examples']} documents)"
                                                          if data.get("max_examples") else ""))
    if train:
        lines.append(f"- {train.get('examples', '?')} training examples, {train.get('steps', '?')} optimizer steps"
                     + (f", {train['supervised_tokens']:,} supervised tokens" if train.get("supervised_tokens") else "")
                     + (f", {train['train_seconds'] / 60:.1f} minutes on {train.get('world_size', 1)} device(s)"
                        if train.get("train_seconds") else ""))
    if lora:
        lines.append(f"- LoRA r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, on "
                     f"{', '.join(lora.get('target_modules') or [])}")
    if optim:
        lines.append(f"- learning rate {optim.get('lr')} ({optim.get('schedule')}), batch {optim.get('batch_size')} "
                     f"x {optim.get('grad_accum')} accumulation, "
                     + (f"{optim['max_steps']} steps" if optim.get("max_steps") else f"{optim.get('epochs')} epochs")
                     + f", seed {optim.get('seed')}")
    lines.append("")
    if dev or test:
        lines += ["## Scores", "", "Strict micro scores in percent (exact span and label), from the run's "
                  "metrics.json:", "", "| split | precision | recall | F1 | documents |", "|---|---:|---:|---:|---:|"]
        if dev.get("best_f1") is not None:
            lines.append(f"| dev (best, step {dev.get('best_step')}) | | | {dev['best_f1']:.2f} | |")
        if test.get("f1") is not None:
            lines.append(f"| test | {test.get('precision', 0):.2f} | {test.get('recall', 0):.2f} | {test['f1']:.2f} | "
                         f"{test.get('docs', '')} |")
        lines.append("")
    return lines


def _decoding_section(decoding: dict[str, Any] | None) -> list[str]:
    if not decoding:
        return []
    dev = decoding.get("dev") or {}
    chosen, answered = dev.get("chosen") or {}, dev.get("answered") or {}
    options = yaml.safe_dump(decoding.get("options") or {}, allow_unicode=True, sort_keys=False).strip()
    lines = ["## Decoding", "",
             f"At the end of training nerft chose how to read the answers on dev ({dev.get('documents', '?')} "
             f"documents): **{decoding.get('setting', '?')}**. It is in the folder's `decoding.yaml`, which "
             "`nerft predict` and `nerft serve` use unless told otherwise (`--config` and flags override it, "
             "`--no-run-decoding` ignores it):", "", "```yaml", options, "```", ""]
    if "f1" in chosen and "f1" in answered:
        lines += [f"Dev strict F1: {100 * answered['f1']:.2f} as answered, {100 * chosen['f1']:.2f} with it. The "
                  "raw answers of transformers or vLLM below are the model's answers as answered.", ""]
    return lines


def _usage_section(model_id: str, prompt: Prompt) -> list[str]:
    system, prefix = json.dumps(prompt.system, ensure_ascii=False), json.dumps(prompt.user_prefix, ensure_ascii=False)
    local = "ner-model" if is_hub_id(model_id) else model_id
    download = [f"huggingface-cli download {model_id} --local-dir {local}   # the folder, with its nerft.json"] \
        if is_hub_id(model_id) else []
    user = f"{prefix} + text" if prompt.user_prefix else "text"
    messages = (f'messages = [{{"role": "system", "content": {system}}},\n'
                f'            {{"role": "user", "content": {user}}}]')
    return [
        "## Use it", "", "### nerft (entities with offsets and scores)", "", "```bash", "pip install nerft", *download,
        f'nerft predict --model {local} "{EXAMPLE_TEXT}"',
        f"nerft predict --model {local} --input texts.jsonl --output entities.jsonl",
        f"nerft serve --model {local}   # POST /v1/ner, OpenAI-compatible POST /v1/chat/completions", "```", "",
        "### transformers (the raw answer)", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f"model_id = {json.dumps(model_id)}", f'text = "{EXAMPLE_TEXT}"',
        "tokenizer = AutoTokenizer.from_pretrained(model_id)",
        "model = AutoModelForCausalLM.from_pretrained(model_id)", messages,
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
        "                                       return_dict=True)",
        "out = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
        'answer = tokenizer.decode(out[0, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)',
        "print(answer)  # the raw answer; nerft predict reads it into entities with character offsets", "```", "",
        "### vLLM", "", "```python", "from vllm import LLM, SamplingParams", "",
        f'text = "{EXAMPLE_TEXT}"', f"llm = LLM(model={json.dumps(model_id)})", messages,
        "params = SamplingParams(temperature=0, max_tokens=256)",
        "print(llm.chat(messages, params)[0].outputs[0].text)", "```", "",
        "or served, with nerft building the prompts and reading the answers:", "", "```bash",
        f"vllm serve {model_id} --served-model-name ner",
        f'nerft predict --model {local} --backend openai --base-url http://localhost:8000/v1 --model-name ner '
        f'"{EXAMPLE_TEXT}"', "```", ""]


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Create the model repository (or reuse it) and upload ``folder``; returns the repository's URL. The token
    comes from HF_TOKEN or ``huggingface-cli login``; any failure is one NerftError."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise NerftError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it to upload")
    from huggingface_hub import HfApi, get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise NerftError(f"--push-to-hub {repo_id} needs a Hugging Face token with write access: set HF_TOKEN (or run "
                         "`huggingface-cli login`)")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message=f"nerft export ({__version__})")
    except Exception as exc:  # HTTP errors, no network, a bad repo id: one line, the folder stays
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NerftError(f"uploading {folder} to the Hugging Face Hub as {repo_id} failed: {first[:300]}; the "
                         f"folder is complete, retry with `huggingface-cli upload {repo_id} {folder}`") from None
    return str(url)
