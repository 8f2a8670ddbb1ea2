"""What a server accepts and how long it waits: ``ServeSettings``, the schema of the ``nerft serve`` flags."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from ..config import ConfigError, opt


@dataclass
class ServeSettings:
    """Limits and batching of one server (flags of ``nerft serve``; keywords of ``create_app``)."""

    scheduler: Literal["auto", "continuous", "micro"] = opt(
        "auto", "how requests share the model. continuous: a request's texts join the running generation batch at "
                "its next decode step and each text is answered as soon as its own answer ends (the transformers "
                "backend); micro: requests gathered for up to --max-wait-ms, then one predictor call per batch "
                "(every backend); auto: continuous where the backend supports it")
    max_batch: int = opt(16, "texts per generation batch and per predictor call (continuous: rows decoding "
                             "together)", flag="--batch-size", deprecated=("--max-batch",))
    max_batch_tokens: int = opt(16384, "continuous scheduler: KV positions the running batch may hold (rows x "
                                       "cached tokens, padding included), which bounds its memory; a longer "
                                       "window still runs, alone")
    max_batch_chars: int = opt(8192, "characters per predictor call (a longer text is a call of its own): bounds "
                                     "the work a request whose client left can still cost")
    max_wait_ms: float = opt(10.0, "how long the first request of a batch waits for company")
    max_texts: int = opt(32, "texts per request (413 beyond)")
    max_text_chars: int = opt(4000, "characters per text (413 beyond)")
    queue_size: int = opt(256, "requests waiting for the model; beyond it the server answers 503")
    timeout: float = opt(60.0, "seconds a request may wait for its answer (504 beyond; a request still queued at "
                               "its deadline is never computed); also the limit on receiving a body (408)")
    max_body_bytes: int = opt(1_000_000, "largest request body in bytes, enforced before it is parsed (413 beyond)")
    api_key: str | None = opt(None, "require 'Authorization: Bearer KEY' on every endpoint but /health; prefer "
                                    "the NERFT_API_KEY environment variable (a flag shows in ps)")
    model_name: str = opt("", "name reported in responses (default: the predictor's)")
    max_connections: int = opt(1024, "open TCP connections; a request beyond them gets 503 (counted in /metrics)")
    header_timeout: float = opt(10.0, "seconds a connection may take to send its request line and headers (from "
                                      "its opening or its previous answer); a slower or idle one is closed")
    min_body_rate: float = opt(8192.0, "bytes a second a request body must arrive at, after header_timeout seconds "
                                       "of grace (from the end of its headers); a slower one is closed")
    allowed_hosts: list[str] | None = opt(None, "Host header names answered (a port is ignored; 'loopback': every "
                                                "loopback name; '*': any); default on loopback without an API key: "
                                                "loopback and the bound host (DNS rebinding), else any")

    def __post_init__(self) -> None:
        positive = {"max_batch": self.max_batch, "max_batch_tokens": self.max_batch_tokens,
                    "max_batch_chars": self.max_batch_chars, "max_texts": self.max_texts, "max_text_chars": self.max_text_chars,
                    "queue_size": self.queue_size, "timeout": self.timeout, "max_body_bytes": self.max_body_bytes,
                    "max_connections": self.max_connections, "header_timeout": self.header_timeout,
                    "min_body_rate": self.min_body_rate}
        for key, value in positive.items():
            if not 0 < value < float("inf"):  # also nan
                raise ConfigError(f"{key} must be positive, got {value}")
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.api_key == "":
            self.api_key = None  # an empty NERFT_API_KEY means no key, not a key anyone can guess
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()
                                             and " " not in self.api_key):
            raise ConfigError("the API key must be printable ASCII without spaces (it travels in an HTTP header)")

    def __repr__(self) -> str:  # never print the key into a log
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["api_key"] = "<set>" if self.api_key else None
        return "ServeSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
