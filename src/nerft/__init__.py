"""nerft: LoRA instruction fine-tuning that turns a chat LLM into a named-entity recogniser, and runs it."""

__version__ = "0.1.0"
