"""The OpenAI-compatible backend (``--backend openai``): any server with ``/v1/chat/completions`` generates, nerft
does the rest. The same ``DecodingPlan`` as the other backends builds the prompt of each window (the model's chat
messages, ``Prompt.messages``), bounds each answer (``max_tokens``) and reads the answers back into grounded
entities with offsets; the server sees one window per request, at temperature 0.

The labels, prompt and tokenizer (for windows and answer bounds) come from ``--model`` (a run directory, an
exported folder or an adapter folder), ``--model-name`` names the model on the server. Requests run ``concurrency``
at a time; HTTP 429, 5xx and connection errors are retried with exponential backoff (or the server's
``Retry-After``), and the last failure is one ``NerftError``. Entity scores come from the server's token
log-probabilities when it returns them, else they are None.

The API key is read from ``--openai.api-key`` or the environment (``NERFT_OPENAI_API_KEY``, then ``OPENAI_API_KEY``),
sent only as a bearer token and never written anywhere.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..generation import Generated, stop_token_ids
from ..schema import NerftError
from .base import EnginePredictor
from .location import ModelLocation
from .options import OpenAIOptions, PredictOptions

if TYPE_CHECKING:
    import httpx

RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
MAX_BACKOFF_S = 30.0


def chat_url(base_url: str) -> str:
    """``.../v1/chat/completions`` from a server address given with or without its ``/v1``."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"


def stop_strings(tokenizer: Any) -> list[str]:
    """The end-of-turn tokens as text (``<|im_end|>``, ...): the request's ``stop`` (at most 4, the API's limit)."""
    return [t for t in tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer)) if t][:4]


def resolve_api_key(settings: OpenAIOptions) -> str | None:
    return settings.api_key or os.environ.get(settings.api_key_env) or os.environ.get("OPENAI_API_KEY") or None


class OpenAIEngine:
    """Chat completions on an OpenAI-compatible server, several requests in flight, each retried on transient
    failures. ``backoff_s``: the first retry's wait (doubled at each retry)."""

    def __init__(self, base_url: str, model_name: str | None, *, api_key: str | None = None, concurrency: int = 8,
                 retries: int = 4, timeout: float = 120.0, logprobs: bool = True, stop: list[str] | None = None,
                 backoff_s: float = 0.5):
        import httpx

        if concurrency < 1 or retries < 0:
            raise NerftError("--openai.concurrency must be at least 1 and --openai.retries at least 0")
        self.url, self.concurrency, self.retries = chat_url(base_url), concurrency, retries
        self.logprobs, self.stop, self.backoff_s = logprobs, list(stop or []), backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.model_name = model_name or self._only_model()

    def _only_model(self) -> str:
        """The served model when the server serves exactly one (``GET /v1/models``)."""
        models_url = self.url.removesuffix("/chat/completions") + "/models"
        body = self._request("GET", models_url, None)
        names = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
        if len(names) != 1:
            raise NerftError(f"{models_url} lists {len(names)} models ({', '.join(map(str, names[:5]))}); pick one "
                             "with --model-name")
        return str(names[0])

    def close(self) -> None:
        self.client.close()

    def generate(self, conversations: list[list[dict[str, str]]], limits: list[int]) -> list[Generated]:
        """One greedy answer per conversation, in order; the first request that fails for good raises."""
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self._complete(m, n) for m, n in zip(conversations, limits, strict=True)]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="nerft-openai") as pool:
            futures = [pool.submit(self._complete, m, n) for m, n in zip(conversations, limits, strict=True)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _complete(self, messages: list[dict[str, str]], max_tokens: int) -> Generated:
        payload: dict[str, Any] = {"model": self.model_name, "messages": messages, "temperature": 0,
                                   "max_tokens": max_tokens, "n": 1}
        if self.stop:
            payload["stop"] = self.stop
        if self.logprobs:  # top_logprobs 0 (valid in OpenAI's API): llama.cpp's server returns none without it
            payload["logprobs"], payload["top_logprobs"] = True, 0
        return read_completion(self._request("POST", self.url, payload), self.url)

    def _request(self, method: str, url: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        import httpx

        problem = ""
        for attempt in range(self.retries + 1):
            wait = min(self.backoff_s * 2 ** attempt, MAX_BACKOFF_S)
            try:
                response = self.client.request(method, url, json=payload)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise NerftError(f"{url} answered HTTP {response.status_code} with a body that is not "
                                         "JSON") from None
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code < 500 and response.status_code not in RETRY_STATUS:
                    raise NerftError(f"{url}: {problem}{_hint(response.status_code)}")
                wait = _retry_after(response) or wait
            if attempt < self.retries:
                time.sleep(wait)
        tries = "1 try" if self.retries == 0 else f"{self.retries + 1} tries"
        raise NerftError(f"{url} failed after {tries}: {problem}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
    message: Any = body
    if isinstance(body, dict):  # OpenAI: {"error": {"message": ...}}; FastAPI: {"detail": ...}
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("detail") or body
    return str(message)[:200]


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (check the API key: $NERFT_OPENAI_API_KEY, $OPENAI_API_KEY or --openai.api-key)"
    if status == 404:
        return " (check --base-url and --model-name)"
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(max(float(value), 0.0), MAX_BACKOFF_S) if value is not None else None
    except ValueError:
        return None


def read_completion(body: dict[str, Any], url: str = "the server") -> Generated:
    """A chat completion's first choice as a ``Generated``: its text, whether it ended by itself, and the bytes and
    log-probability of each token when the server sent them (``pieces`` stays None otherwise)."""
    try:
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise NerftError(f"{url} answered without choices[0].message: {str(body)[:200]}") from None
    logprobs_field = choice.get("logprobs")
    tokens = (logprobs_field.get("content") or []) if isinstance(logprobs_field, dict) else []
    pieces, logprobs = None, []
    if tokens and all(isinstance(t, dict) and "logprob" in t for t in tokens):
        pieces = [bytes(t["bytes"]) if t.get("bytes") is not None else str(t.get("token", "")).encode("utf-8")
                  for t in tokens]
        logprobs = [float(t["logprob"]) for t in tokens]
    return Generated(text, [], logprobs, choice.get("finish_reason") != "length", pieces)


class OpenAIPredictor(EnginePredictor):
    """A ``Predictor`` over an OpenAI-compatible server (or anything with the engine's ``generate``)."""

    backend = "openai"

    def engine_requests(self, texts: list[str], ids: list[list[int]]) -> list:
        return [self.prompt.messages(t, self.plan.hint(t)) for t in texts]

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer: Any, settings: OpenAIOptions,
                      options: PredictOptions) -> OpenAIPredictor:
        """The labels, prompt and tokenizer come from ``where``; the weights stay on the server."""
        if not settings.base_url:
            raise NerftError("--backend openai needs --base-url (the server, e.g. http://localhost:8000/v1)")
        labels, prompt = where.labels_and_prompt
        engine = OpenAIEngine(settings.base_url, settings.model_name, api_key=resolve_api_key(settings),
                              concurrency=settings.concurrency, retries=settings.retries, timeout=settings.timeout,
                              logprobs=settings.logprobs, stop=stop_strings(tokenizer))
        return cls(engine, tokenizer, labels, prompt, options, name=engine.model_name,
                   hint_lexicon=where.hint_lexicon(prompt))
