"""The page ``nerft serve`` answers at ``/``: static, a client of the server's own ``/v1/info`` and ``/v1/ner``
(``assets/serve.*``, with ``marks.js``)."""

from __future__ import annotations

from functools import lru_cache

from .bundle import Page, asset, build_page


@lru_cache(maxsize=1)
def serve_page() -> Page:
    return build_page(title="nerft", body=asset("serve.html"), styles=("base.css", "serve.css"),
                      scripts=("marks.js", "serve.js"), connect_self=True)
