"""The page at ``/`` (text in, entities marked) and ``GET /v1/info``, the model's description it shows.

The page is static (``nerft.pages``): it holds no data, so it loads without the API key (``guards.OPEN_PATHS``),
asks for the key when the server wants one, and then calls ``/v1/info`` and ``/v1/ner`` like any client.
``/v1/info``: ``{"model", "labels": [{code, name, description}], "limits": {"max_texts", "max_text_chars"}}`` and,
from the run's files when there are some, ``base``, ``adapter``, ``decoding`` (the run decoding's setting) and
``scores`` (``{"dev F1": .., "test F1": ..}`` in percent, from metrics.json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..pages.serve_page import serve_page
from ..schema import NerftError

if TYPE_CHECKING:
    from ..inference.options import LoadOptions


def describe_model(load: LoadOptions) -> dict[str, Any]:
    """What the page's header shows of the model ``load`` (``LoadOptions``) names; {} when it cannot be located
    (the predictor, already open, is what serves: a description is not worth refusing to start over)."""
    from ..inference.location import locate_model

    try:
        where = locate_model(load)
    except NerftError:
        return {}
    about: dict[str, Any] = {}
    info = where.info
    if info is not None and info.kind != "llm":
        about["task"] = {"tagger": "tagger (one forward pass a text)", "crf": "character CRF"}.get(info.kind, info.kind)
    if info is not None and info.merged:
        base = (info.merged_from or {}).get("base_model")
        about["base"] = f"merged from {base}" if base else "merged weights"
    else:
        source = where.weights.name_or_path  # a hub id as given; a local folder by its name
        about["base"] = (f"{Path(source).name} (local)" if Path(source).is_absolute() else source) + (
            f" @ {where.weights.revision}" if where.weights.revision else "")
    if where.adapter is not None:
        about["adapter"] = "/".join(Path(where.adapter).parts[-2:])
    if info is not None and info.decoding and info.decoding.get("setting"):
        about["decoding"] = str(info.decoding["setting"])
    about["scores"] = run_scores(where.home)
    return about


def run_scores(home: Path | None) -> dict[str, float]:
    """Dev and test F1 (percent) from a run's metrics.json; {} without one (an export, a bare adapter)."""
    try:
        metrics = json.loads((home / "metrics.json").read_text(encoding="utf-8")) if home else {}
    except (OSError, ValueError):
        return {}
    scores: dict[str, float] = {}
    dev, test = metrics.get("dev") or {}, metrics.get("test") or {}
    def score(value: Any) -> bool:  # a number the page can show (JSON's Infinity and NaN cannot be)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0

    if score(dev.get("best_f1")):
        scores["dev F1"] = float(dev["best_f1"])
    chosen = ((metrics.get("decoding") or {}).get("dev") or {}).get("chosen") or {}
    if score(chosen.get("f1")):
        scores["dev F1 (run decoding)"] = 100 * float(chosen["f1"])
    if score(test.get("f1")):
        scores["test F1"] = float(test["f1"])
    return scores


def page_router(about: dict[str, Any] | None = None) -> APIRouter:
    """``GET /`` and ``GET /v1/info``; ``about``: ``describe_model``'s answer (base, adapter, scores, decoding)."""
    router = APIRouter()
    page = serve_page()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page.html, headers={"content-security-policy": page.csp + "; frame-ancestors 'none'",
                                                "x-content-type-options": "nosniff",
                                                "referrer-policy": "no-referrer", "cache-control": "no-cache"})

    @router.get("/v1/info")
    async def model_info(request: Request) -> dict[str, Any]:
        state = request.app.state
        return {"model": state.settings.model_name or state.predictor.name,
                "labels": state.predictor.labels.to_dict()["labels"],
                "limits": {"max_texts": state.settings.max_texts, "max_text_chars": state.settings.max_text_chars},
                **(about or {})}

    return router
