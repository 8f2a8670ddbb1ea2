"""OpenAI-compatible endpoints of ``nerft serve``: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client (and nerft's own ``--backend openai``) can then use a served nerft model. The model runs on the
text of the last user message (its prompt's user prefix, e.g. the tutorial's ``文本:``, taken off when present):
a request that sends nerft's exact prompt (``Prompt.messages(text)``) and one that sends only the text get the
same answer, because the served predictor builds its own prompt. The assistant message is the model's raw answer
(its windows' answers joined by newlines for a text longer than one window); the caller parses it (nerft's
``read_answer``) and grounds it. Decoding is the predictor's own: greedy, its answer bound, its options;
``temperature``, ``max_tokens``, ``stop`` and ``logprobs`` are accepted and ignored, and no log-probabilities are
returned. ``usage`` counts the tokens the model read (the whole prompt of every window, the cached system prompt
included) and wrote (0 for a tagger, which writes nothing: its answer is rendered from its tags). Responses are
typed (``ChatCompletion``, ``ModelList``: the fields OpenAI's clients read); errors have OpenAI's shape
(``{"error": {"message", "type", "code"}}``).

The router is one of ``serve.create_app``'s ``routers``: it sits behind the server's authentication, body limit and
metrics, and reads the predictor and settings from ``app.state``. Under the continuous scheduler chat requests join
the same running batch as ``/v1/ner``'s (``ContinuousBatcher.submit(..., detailed=True)`` gives the raw answers).
Under micro-batching they are batched by a second ``serve.batching.Batcher`` of the same settings (deadlines,
client-gone, failure isolation) over the predictor's ``predict_detailed``, and the two batchers never call the model
at the same time (both hold ``serve.batching.predictor_lock(predictor)``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict

from ..lexicon import HINT_HEADER
from ..prompts import Prompt
from .batching import Batcher, ContinuousBatcher, RequestFailed, predictor_lock
from .guards import SafeJSONResponse

if TYPE_CHECKING:
    from starlette.datastructures import State

    from ..inference.base import Predictor


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, stop, logprobs, ...: accepted, ignored
    model: str | None = None
    messages: list[ChatMessage]
    n: int = 1
    stream: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "nerft"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def chat_text(messages: list[ChatMessage], prompt: Prompt) -> str | None:
    """The text to analyse: the last user message's text without the prompt's user prefix, nor the lexicon hint
    line a client that builds nerft's prompt adds for a model trained with hints (None: no user turn)."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        return None
    content = users[-1].content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        text = "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    else:
        text = content or ""
    if prompt.user_prefix and text.startswith(prompt.user_prefix):
        text = text[len(prompt.user_prefix):]
    if prompt.hints and (cut := text.rfind("\n" + HINT_HEADER)) >= 0:  # the client's own lexicon hint line
        text = text[:cut]
    return text


def openai_error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
    kind = "invalid_request_error" if status < 500 else "server_error"
    return SafeJSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status,
                            headers=headers)


class RawAnswers:
    """A predictor seen through its raw answers: ``predict`` gives each text's ``Prediction`` (what a ``Batcher``
    hands back to the route)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def predict(self, texts: list[str], labels: list[str] | None = None):
        return self.predictor.predict_detailed(texts, labels)


@contextlib.asynccontextmanager
async def _chat_batcher(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    if isinstance(getattr(state, "batcher", None), ContinuousBatcher):  # one scheduler for both routes
        state.chat_batcher = state.batcher
        yield
        return
    state.chat_batcher = Batcher(RawAnswers(state.predictor), state.settings, state.stats,
                                 lock=predictor_lock(state.predictor))
    await state.chat_batcher.start()
    try:
        yield
    finally:
        await state.chat_batcher.stop()


def _checked_text(request: ChatRequest, prompt: Prompt, max_chars: int) -> str:
    text = chat_text(request.messages, prompt)
    if text is None or not text.strip():
        raise RequestFailed(400, "the last user message must hold the text to analyse")
    if len(text) > max_chars:
        raise RequestFailed(413, f"the text has {len(text)} characters; the limit is {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestFailed(400, f"the text is not valid Unicode: a lone surrogate at character {exc.start}") from None
    return text


class OpenAIRoute(APIRoute):
    """A route whose malformed requests are answered in OpenAI's error shape (400, ``{"error": {...}}``), as its
    clients read them, instead of FastAPI's ``{"detail": [...]}``."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def openai_shaped(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = (exc.errors() or [{}])[0]
                where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
                return openai_error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else
                                    str(first.get("msg", "invalid request")))

        return openai_shaped


def openai_router():
    """The router to pass to ``create_app(..., routers=[openai_router()])``."""
    router = APIRouter(lifespan=_chat_batcher, route_class=OpenAIRoute)

    def served_name(state: State) -> str:
        return state.settings.model_name or state.predictor.name

    @router.get("/v1/models")
    async def models(request: Request) -> ModelList:
        return ModelList(data=[ModelCard(id=served_name(request.app.state))])

    @router.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat_completions(body: ChatRequest, request: Request):
        state = request.app.state
        model_name = served_name(state)
        try:
            if body.model is not None and body.model != model_name:
                raise RequestFailed(404, f"model {body.model!r} does not exist; this server serves {model_name!r}")
            if body.stream:
                raise RequestFailed(400, "streaming is not supported; send stream: false")
            if body.n != 1:
                raise RequestFailed(400, "only n = 1 is supported (decoding is greedy)")
            text = _checked_text(body, state.predictor.prompt, state.settings.max_text_chars)
            batcher = getattr(state, "chat_batcher", None)
            if batcher is None:
                raise RequestFailed(503, "the server is starting")
            if isinstance(batcher, ContinuousBatcher):
                [prediction] = await batcher.submit([text], None, request, detailed=True)
            else:  # micro-batching over RawAnswers, whose results are the predictions
                [prediction] = await batcher.submit([text], None, request)
        except RequestFailed as exc:
            return openai_error(exc.status, exc.detail, "model_not_found" if exc.status == 404 else None,
                                exc.headers)
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
            choices=[ChatChoice(index=0, message=AssistantMessage(content="\n".join(prediction.answers)),
                                finish_reason="stop" if prediction.finished else "length")],
            usage=Usage(prompt_tokens=prediction.prompt_tokens, completion_tokens=prediction.completion_tokens,
                        total_tokens=prediction.prompt_tokens + prediction.completion_tokens))

    return router
