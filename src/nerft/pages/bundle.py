"""One self-contained HTML file from the package's assets: the styles and scripts inlined, the page's data as a
JSON block that no text can break out of, and a Content-Security-Policy that lets only those inlined scripts and
styles run (their SHA-256 hashes) and the page talk to its own server only. Nothing is fetched from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .marks import escape

# What a JSON block needs escaped to stay one: '<' ('</script>', '<!--'), '>' and '&' as JSON escapes, and a lone
# surrogate (valid in a JSON string, not in UTF-8) as its escape too.
_UNSAFE_IN_SCRIPT = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def asset(name: str) -> str:
    """The text of ``pages/assets/<name>`` (package data)."""
    return resources.files("nerft.pages").joinpath("assets").joinpath(name).read_text(encoding="utf-8")


def json_block(data: Any) -> str:
    """``data`` as JSON to put inside ``<script type="application/json">``: ``JSON.parse`` of the block's text gives
    ``data`` back, whatever strings it holds."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _UNSAFE_IN_SCRIPT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


@dataclass
class Page:
    html: str
    csp: str  # the Content-Security-Policy the page carries (a server sends it as a header too)


def build_page(*, title: str, body: str, styles: tuple[str, ...] = ("base.css",), scripts: tuple[str, ...] = (),
               data: Any = None, connect_self: bool = False) -> Page:
    """A page of ``body`` (HTML, already escaped) with the named assets inlined and ``data`` in a JSON block
    ``#nerft-data``. ``connect_self``: the scripts may call the page's own server (the serve page)."""
    css = "\n".join(asset(name) for name in styles)
    js = "\n".join(asset(name) for name in scripts)
    if "</script" in js.lower() or "</style" in css.lower():
        raise ValueError("an inlined asset holds a closing tag")
    policy = ["default-src 'none'", f"style-src {_sha256(css)}", "img-src data:", "base-uri 'none'",
              "form-action 'none'"]
    if js:
        policy.append(f"script-src {_sha256(js)}")
    if connect_self:
        policy.append("connect-src 'self'")
    csp = "; ".join(policy)
    parts = ['<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">',
             f"<title>{escape(title)}</title>", f"<style>{css}</style>", "</head>", "<body>", body]
    if data is not None:
        parts.append(f'<script type="application/json" id="nerft-data">{json_block(data)}</script>')
    if js:
        parts.append(f"<script>{js}</script>")
    parts += ["</body>", "</html>", ""]
    return Page("\n".join(parts), csp)
