"""Progress of long loops: a bar on a terminal, a log line every tenth of the way otherwise.

``nerft`` sets the choice for the whole command (``--progress``/``--no-progress``; by default a bar only when
stderr is a terminal, see :func:`chosen`). A bar is a context manager, so it is closed when the loop fails.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
logger = logging.getLogger("nerft.progress")

_CHOICE: list[bool | None] = [None]  # --progress / --no-progress of the running command; None: a bar on a TTY
_OPEN_BARS: list[int] = [0]  # bars drawn now: log lines then go above them (tqdm.write), see write_line


@contextlib.contextmanager
def chosen(show: bool | None) -> Iterator[None]:
    """The command's choice while it runs (``nerft.cli`` sets it): True a bar, False no bar, None a bar on a TTY;
    a log line every tenth of the way wherever there is no bar."""
    before = _CHOICE[0]
    _CHOICE[0] = show
    try:
        yield
    finally:
        _CHOICE[0] = before


class Progress:
    """Counts steps of a loop of ``total`` and shows them: a tqdm bar, or (``bar=False``) a log line at the start
    and each time another ``every`` of the total is done (11 lines for 100 steps at 0.1), or nothing."""

    def __init__(self, total: int | None, desc: str, *, unit: str = "step", initial: int = 0, bar: bool = False,
                 lines: bool = True, every: float = 0.1, stream: TextIO | None = None, leave: bool = True,
                 log: logging.Logger | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every, self.lines = every, lines
        self.postfix: dict[str, Any] = {}
        self.log = log or logger
        self.closed = False
        self._logged = -1  # the last tenth (of every) logged
        self._bar = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                             file=stream or sys.stderr, leave=leave)
            self.lines = False
            _OPEN_BARS[0] += 1
        self._log_line()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        self._log_line()

    def set_total(self, total: int | None) -> None:
        """A new total: a loop whose length is known only as it goes (a time budget's steps, from the pace)."""
        if total == self.total:
            return
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()
        self._log_line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def write(self, message: str) -> None:
        """A status line (logged at info) that does not break the bar."""
        self.log.info(message)

    def close(self) -> None:
        if self._bar is not None and not self.closed:
            self._bar.close()
            _OPEN_BARS[0] -= 1
        self.closed = True

    def _log_line(self) -> None:
        if not self.lines or not self.total:  # no total (yet): nothing to give a share of
            return
        part = int(min(self.n, self.total) / self.total / self.every + 1e-9)
        if part <= self._logged:
            return
        self._logged = part
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        what = "" if self.log.name.endswith("." + self.desc) else self.desc + ": "  # not "nerft train: train: "
        self.log.info("%s%d%% (%d/%d %ss)%s", what, round(100 * min(self.n, self.total) / self.total),
                      self.n, self.total, self.unit, extra)


def choice(show: bool | None = None) -> bool | None:
    """``show`` if given, else the running command's choice (None: neither asked for nor against bars)."""
    return _CHOICE[0] if show is None else show


def write_line(line: str, stream: TextIO) -> None:
    """Write a log line to ``stream``: above the bars while any is drawn, so that they stay whole."""
    if _OPEN_BARS[0]:
        from tqdm import tqdm

        tqdm.write(line, file=stream)
    else:
        stream.write(line + "\n")
        stream.flush()


def wants_bar(show: bool | None, stream: TextIO | None = None) -> bool:
    """Whether to draw a bar: ``show`` if given, else the command's choice, else whether ``stream`` (stderr by
    default) is a terminal."""
    if show is None:
        show = _CHOICE[0]
    if show is None:
        stream = stream or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())
    return show


@contextlib.contextmanager
def progress(total: int | None, desc: str, *, unit: str = "step", initial: int = 0, show: bool | None = None,
             enabled: bool = True, every: float = 0.1, stream: TextIO | None = None, leave: bool = True,
             log: logging.Logger | None = None) -> Iterator[Progress]:
    """A :class:`Progress` closed however the block ends. ``show``: True a bar, False nothing, None as the command
    chose (:func:`wants_bar`: a bar on a terminal, else a line to ``log`` every ``every`` of the way);
    ``enabled=False`` shows nothing (another process of a launcher)."""
    bar = enabled and wants_bar(show, stream)
    lines = enabled and not bar and show is not False and _CHOICE[0] is not False
    meter = Progress(total, desc, unit=unit, initial=initial, bar=bar, lines=lines, every=every, stream=stream,
                     leave=leave, log=log)
    try:
        yield meter
    finally:
        meter.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "item",
          show: bool | None = None) -> Iterator[T]:
    """``items`` as they come, counted by :func:`progress` (log lines need ``total``)."""
    with progress(total, desc, unit=unit, show=show, leave=False) as meter:
        for item in items:
            yield item
            meter.update()


__all__ = ["Progress", "progress", "track", "chosen", "choice", "wants_bar", "write_line"]
