"""Prompts: the system prompt is built from the label set and the output format.

Two styles:
- ``nerft``: a short prompt (cost is proportional to tokens processed: every prompt token is paid for on every
  training example and every prediction), the text itself as the user turn.
- ``tutorial``: the Qwen2-NER tutorial's exact system prompt and its ``文本:`` user prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formats import get_format
from .labels import LabelSet
from .schema import NerftError

# Verbatim from the tutorial (note the trailing space). Its label list is hard-coded for CCFBDCI.
TUTORIAL_SYSTEM_PROMPT = (
    "你是一个文本实体识别领域的专家，你需要从给定的句子中提取 地点; 人名; 地理实体; 组织 实体. "
    '以 json 格式输出, 如 {"entity_text": "南京", "entity_label": "地理实体"} '
    '注意: 1. 输出的每一行都必须是正确的 json 字符串. 2. 找不到任何实体时, 输出"没有找到任何实体". '
)

PROMPT_STYLES = ("nerft", "tutorial")


class PromptError(NerftError, ValueError):
    """A prompt style and output format that do not go together (a ValueError too, for callers that catch that)."""


@dataclass(frozen=True)
class Prompt:
    """Everything needed to turn a text into chat messages. Stored in a run directory inside nerft.json."""

    system: str
    user_prefix: str = ""
    style: str = "nerft"
    output_format: str = "compact"
    # lexicon hints after the text (``Lexicon.hint``, data.lexicon_hints): at most this many strings; 0: none
    hints: int = 0

    def messages(self, text: str, hint: str = "") -> list[dict[str, str]]:
        """The chat turns for ``text``; ``hint`` (a ``Lexicon.hint`` line) goes on a line after the text."""
        user = self.user_prefix + text + ("\n" + hint if hint else "")
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def to_dict(self) -> dict[str, str | int]:
        return {"system": self.system, "user_prefix": self.user_prefix, "style": self.style,
                "output_format": self.output_format, **({"hints": self.hints} if self.hints else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Prompt:
        return cls(d["system"], d.get("user_prefix", ""), d.get("style", "nerft"), d.get("output_format", "compact"),
                   int(d.get("hints", 0)))


def build_prompt(labels: LabelSet, output_format: str = "compact", style: str = "nerft",
                 describe_labels: bool = False) -> Prompt:
    if style == "tutorial":
        if output_format != "tutorial":
            # The tutorial's prompt describes its own JSON target; pairing it with another target would mislead.
            raise PromptError("the tutorial prompt style goes with the tutorial output format (data.output_format "
                              "tutorial); the nerft style goes with compact or jsonl")
        if labels.names == ["地点", "人名", "地理实体", "组织"]:
            system = TUTORIAL_SYSTEM_PROMPT
        else:  # the same wording for another label set
            system = TUTORIAL_SYSTEM_PROMPT.replace("地点; 人名; 地理实体; 组织", "; ".join(labels.names)).replace(
                '"entity_label": "地理实体"', f'"entity_label": "{labels.names[0]}"'
            )
        return Prompt(system, "文本:", "tutorial", "tutorial")
    if style != "nerft":
        raise PromptError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    fmt = get_format(output_format)
    described = [f"{lab.name}({lab.description})" if describe_labels and lab.description else lab.name
                 for lab in labels.labels]
    system = f"抽取实体：{'、'.join(described)}。{fmt.instruction(labels)}"
    return Prompt(system, "", "nerft", output_format)


def prompt_for_labels(prompt: Prompt, run_labels: LabelSet, labels: LabelSet) -> Prompt:
    """``prompt`` rebuilt for another label set (``--label-set``: a data.mixture run asked for one of the sets it was
    trained with, or a new one). Only a prompt built from its label set alone can be rebuilt: one with worked
    examples, a system prompt of its own or lexicon hints names the run's labels in ways nerft cannot redo."""
    if not prompt.hints:
        for describe in (False, True):
            try:
                built = build_prompt(run_labels, prompt.output_format, prompt.style, describe)
            except PromptError:
                break
            if built.system == prompt.system and built.user_prefix == prompt.user_prefix:
                return Prompt(build_prompt(labels, prompt.output_format, prompt.style, describe).system,
                              prompt.user_prefix, prompt.style, prompt.output_format)
    raise NerftError("--label-set: this model's prompt is not built from its label set alone (worked examples, "
                     "lexicon hints or a system prompt of its own), so it cannot be rebuilt for another label set")
