"""Stop signals during training: Ctrl-C (SIGINT) and SIGTERM (a cluster scheduler's preemption, ``docker stop``)
end a run at a step boundary with a checkpoint, never halfway through an optimizer update."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; the run stopped at a step boundary with a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """SIGINT and SIGTERM become ``TrainingInterrupted``, raised at once, except inside ``critical()`` (the
    optimizer update and its bookkeeping), where it is raised when the block ends: a stop never leaves half an
    update behind."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._critical = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if not self._critical:
            raise TrainingInterrupted(signum)

    @contextlib.contextmanager
    def critical(self):
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self.signum is not None:
            raise TrainingInterrupted(self.signum)
