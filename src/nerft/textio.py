"""Reading users' text files: one declared or detected encoding, and errors that name file, line and byte.

Every command that reads a user's file (``prepare``, ``evaluate``, ``predict``, the label and config files) goes
through here. ``--encoding`` is a Python codec name (``utf-8``, the default; ``gb18030``, ``gbk``, ``utf-16``...)
or ``auto``: a UTF-8, UTF-16 or UTF-32 byte-order mark decides; otherwise UTF-8 when the file decodes as UTF-8,
else GB18030 (a superset of GBK and GB2312) when it decodes as GB18030, else an error. A byte-order mark at the
start of a file is dropped whatever the encoding.

Bytes that do not decode raise :class:`~nerft.schema.InputError` with the line and the byte offset in the file.
JSON files get one more check (:func:`check_json_text`): a ``\\udXXX`` escape without its partner (a lone
surrogate) decodes into a string no UTF-8 writer can write back, so it is rejected where it is read.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .schema import InputError, NerftError

AUTO = "auto"
ENCODING_HELP = ("encoding of the input files: a Python codec name (utf-8, gb18030, gbk, utf-16, ...) or auto "
                 "(byte-order mark, else UTF-8, else GB18030)")
ENCODING_ADVICE = "pass --encoding auto, or the file's codec (e.g. --encoding gb18030)"
SNIFF_BYTES = 1 << 20  # auto detection decodes this much of a file
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def require_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """``path`` as a Path, or a NerftError saying it is missing, a folder or not a regular file (a FIFO or a
    device such as /dev/zero: never ends, or cannot be read again)."""
    path = Path(path)
    if path.is_dir():
        raise NerftError(f"{what} {path} is a folder; pass a file")
    kind = special_file_kind(path)
    if kind:
        raise NerftError(f"{what} {path} is {kind}, not a regular file; pass a file")
    if not path.is_file():
        raise NerftError(f"{what} {path} does not exist")
    return path


def require_output_file(path: str | os.PathLike, what: str = "--output") -> Path:
    """``path`` as a Path to write, or a NerftError when it exists as something else than a regular file (a
    FIFO would block until a reader comes; /dev/null cannot be resumed or synced) or is a folder."""
    path = Path(path)
    if path.is_dir():
        raise NerftError(f"{what} {path} is a folder; pass a file")
    kind = special_file_kind(path)
    if kind:
        raise NerftError(f"{what} {path} is {kind}, not a regular file: nerft appends, syncs and resumes its "
                         "output; pass a file")
    return path


def special_file_kind(path: Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a folder ("a FIFO (named pipe)"...)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), None)


def unfinished_tail(path: str | os.PathLike) -> bool:
    """Whether the file's last line has text but no line end yet (a file still being written)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            tail = f.read(end - start) + tail
            if b"\n" in tail:
                tail = tail[tail.rfind(b"\n") + 1:]
                break
            end = start
    return bool(tail.strip(b" \t\r\x00").removeprefix(codecs.BOM_UTF8))


def resolve_encoding(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The codec to read ``path`` with: ``encoding`` checked, or detected when it is ``auto``."""
    if encoding == AUTO:
        return detect_encoding(path)
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise NerftError(f"unknown encoding {encoding!r}; pass a codec name such as utf-8, gb18030, utf-16, "
                         "or auto") from None


def detect_encoding(path: str | os.PathLike) -> str:
    """The encoding of ``path`` by its byte-order mark, else UTF-8 or GB18030, whichever decodes its first MiB."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        final = not f.read(1)
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    errors = []
    for name in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(name)().decode(head, final=final)  # a character cut at the end is fine
        except UnicodeDecodeError as exc:
            errors.append(exc)
            continue
        return name
    error = errors[0]
    raise InputError(path, _line_at(head, error.start, "utf-8"),
                     f"cannot detect the encoding: neither UTF-8 (byte {error.start} of the file is "
                     f"{head[error.start:error.start + 1].hex()}) nor GB18030; pass --encoding with the file's codec")


def read_text(path: str | os.PathLike, encoding: str = "utf-8", *, advice: str = ENCODING_ADVICE) -> str:
    """The whole file decoded (``encoding`` may be ``auto``), without a byte-order mark. ``advice`` ends the
    error message for bad bytes (a file that has no --encoding flag says what to do instead)."""
    codec = resolve_encoding(path, encoding)
    data = Path(path).read_bytes()
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise decode_error(path, data, exc, codec, advice) from None
    return text.removeprefix("\ufeff")


def iter_lines(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(line number, line without its line end) for each line of a text file (``encoding`` may be ``auto``).

    Encodings in which a newline is the byte ``\\n`` (UTF-8, GB18030, GBK, Latin-1...) are decoded a line at a
    time; UTF-16/32 files are decoded whole. A bad byte raises InputError with its line and file offset.
    """
    codec = resolve_encoding(path, encoding)
    if _newline_is_one_byte(codec):
        with open(path, "rb") as f:
            offset = 0
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode(codec)
                except UnicodeDecodeError as exc:
                    raise InputError(path, lineno, _bad_bytes(codec, offset + exc.start, raw[exc.start:exc.end],
                                                              exc.reason)) from None
                offset += len(raw)
                yield lineno, _strip_line(line, lineno)
        return
    for lineno, line in enumerate(read_text(path, codec).split("\n"), 1):
        yield lineno, _strip_line(line, lineno)


def decode_error(path: str | os.PathLike, data: bytes, exc: UnicodeDecodeError, codec: str,
                 advice: str = ENCODING_ADVICE) -> InputError:
    """The InputError for a failed decode of a whole file's bytes: the line and byte offset of the bad bytes."""
    return InputError(path, _line_at(data, exc.start, codec),
                      _bad_bytes(codec, exc.start, data[exc.start:exc.end], exc.reason, advice))


def check_json_text(obj: Any, raw: str, path: str | os.PathLike, line: int | None) -> None:
    """Raise InputError when a parsed JSON value holds a lone surrogate (``raw`` is the JSON it came from: only a
    ``\\udXXX`` escape can put one there, so values without one are not walked)."""
    if not _SURROGATE_ESCAPE.search(raw):
        return
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start]
        raise InputError(path, line, f"holds a lone surrogate \\u{ord(char):04x} (half of a UTF-16 pair, written "
                                     "as a JSON escape): it is not text; fix the program that wrote the file"
                         ) from None


def _newline_is_one_byte(codec: str) -> bool:
    try:
        return "\n".encode(codec) == b"\n" and "a".encode(codec) == b"a"
    except UnicodeError:
        return False


def _strip_line(line: str, lineno: int) -> str:
    line = line.removesuffix("\n").removesuffix("\r")
    return line.removeprefix("\ufeff") if lineno == 1 else line


def _line_at(data: bytes, offset: int, codec: str) -> int:
    if _newline_is_one_byte(codec):
        return data.count(b"\n", 0, offset) + 1
    return data[:offset].decode(codec, errors="replace").count("\n") + 1


def _bad_bytes(codec: str, offset: int, bad: bytes, reason: str, advice: str = ENCODING_ADVICE) -> str:
    return f"not valid {codec} at byte {offset} of the file ({bad.hex(' ')}: {reason}); {advice}"
