"""nerft: LoRA instruction fine-tuning that turns a chat LLM into a named-entity recogniser, and runs it.

The Python API (``nerft.api``; docs/python.md): ``nerft.load(MODEL)`` opens a run, an export or a hub id and gives
entities with character offsets when called on texts; ``nerft.evaluate(gold, predictions)`` scores them.
"""

__version__ = "0.1.0"

__all__ = ["load", "evaluate", "NER", "Scores", "LabelScores", "Entity", "Document", "__version__"]


def __getattr__(name: str):  # the API on first use: `import nerft` (every CLI command) stays light
    if name == "evaluate":  # the module, callable as the scoring function (see nerft/evaluate.py)
        import importlib

        return importlib.import_module(".evaluate", __name__)
    if name in ("load", "NER", "Scores", "LabelScores"):
        from . import api

        return getattr(api, name)
    if name in ("Entity", "Document"):
        from . import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'nerft' has no attribute {name!r}")
