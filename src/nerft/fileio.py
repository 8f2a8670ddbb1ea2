"""Writing files safely: atomic writes (a temporary file or folder renamed into place, so a crash never leaves a
half-written output), outputs kept apart from the inputs they would replace, and OS errors in one line."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .schema import NerftError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block finishes.

    An OSError that names no file (a full disk while writing) is raised again naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the permissions open() would
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Write a folder under a temporary name beside ``path``; it replaces ``path`` only if the block finishes.

    The folder written is ``.NAME.XXXX.tmp/NAME``, so code that names things after the folder sees its real name.
    A crash between the two renames of the replacement leaves the previous folder as ``.NAME.old`` beside it
    (and no ``NAME``): never a mix of old and new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = stage / path.name
    try:
        tmp.mkdir()  # with the permissions of a plain mkdir (mkdtemp's own folder is owner-only)
        yield tmp
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_output_apart(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str = "--out",
                       writes: Iterable[str] | None = None) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs`` (files or folders that exist;
    hub ids and None are skipped): writing the output there would replace or mix with what the command reads
    (``nerft export --out RUN --overwrite`` once replaced its own run). ``writes``: the names the command writes
    or clears in the folder, when it does not replace the folder as a whole (train's run files): an input inside
    the folder is refused only when it is, or lies under, one of them."""
    out = Path(output).expanduser().resolve()
    touched = None if writes is None else {out / name for name in writes}
    for given in inputs:
        if given is None or not str(given) or not Path(given).expanduser().exists():
            continue
        source = Path(given).expanduser().resolve()
        inside_out = source.is_relative_to(out) and source != out
        if inside_out and touched is not None and not any(source.is_relative_to(t) for t in touched):
            continue
        how = ("is" if out == source else "contains" if inside_out
               else "is inside" if out.is_relative_to(source) else None)
        if how is not None:
            raise NerftError(f"{flag} {output} {how} the input {given}, which writing it would replace or mix with: "
                             f"pass an {flag} apart from every input")


def describe_os_error(exc: OSError) -> str:
    """One sentence for an OSError: the path and why; a path under a file says which part is the file."""
    path = exc.filename
    if path is None:
        return exc.strerror or str(exc)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # mkdir or open of a path whose parent (or itself) is a file
        for part in (Path(path), *Path(path).parents):
            if part.is_file():
                return f"{part} is a file, not a folder (needed for {path})" if str(part) != str(path) \
                    else f"{path} is a file, not a folder"
    return f"{path}: {exc.strerror or exc}"


@contextlib.contextmanager
def write_errors(path: str | os.PathLike):
    """A failed write inside the block (an OSError, or safetensors' own error type on a full disk) as one
    NerftError naming ``path``. Meant around :func:`atomic_dir`, so the previous folder is kept."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTDIR):
            raise NerftError(describe_os_error(exc)) from None  # a file where a folder must go
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NerftError(f"cannot write {path}: {reason}; the previous copy, if any, is kept") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")
