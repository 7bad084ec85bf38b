"""SIGTERM, as a batch job's time limit sends it: stop the work cleanly, and never leave a run ``running``.

Schedulers, ``nohup`` and ``&`` may start us with signals ignored, so the handler is installed whatever
disposition was inherited. The first SIGTERM asks the work to stop (``request``, e.g. a study's stop
file: its simulations checkpoint at their current step) and gives it ``grace_s`` to return; if it has
not by then (a model call, a phase that does not look), the main thread is interrupted with
``Terminated``, which takes the Ctrl-C path with this reason. Slurm sends SIGKILL ``KillWait`` (30 s by
default) after SIGTERM, so the grace is 20 s. A second SIGTERM interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from sciagent.errors import Terminated

SIGTERM_REASON = "terminated by SIGTERM (the batch job's time limit?)"
DEFAULT_GRACE_S = 20.0


class StopOnSigterm:
    """While the block runs, SIGTERM stops the work: by ``request`` within ``grace_s``, else ``Terminated``.

    ``request(reason)`` returns False when there is nothing to ask yet (no run exists): the block is
    interrupted at once. Without ``request``, SIGTERM always interrupts at once. Main thread only.
    """

    def __init__(
        self, request: Callable[[str], bool] | None = None, grace_s: float = DEFAULT_GRACE_S
    ) -> None:
        self._request = request
        self.grace_s = grace_s
        self.reason: str | None = None  # set once SIGTERM arrived
        self._timer: threading.Timer | None = None
        self._previous: Any = None
        self._active = False

    def __enter__(self) -> StopOnSigterm:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._active = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._active = False  # a signal from the timer still pending now must not interrupt what follows
        if self._timer is not None:
            self._timer.cancel()
        signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._active:
            return
        if self.reason is not None:  # the grace is over (the timer's signal), or a second SIGTERM
            raise Terminated(self.reason)
        self.reason = SIGTERM_REASON
        if self._request is None or not self._request(self.reason):
            raise Terminated(self.reason)
        # A real signal, not ``_thread.interrupt_main``: it also wakes a main thread blocked in a sleep or
        # a socket read, where a simulated one would wait for the call to return.
        main = threading.main_thread().ident
        assert main is not None
        self._timer = threading.Timer(self.grace_s, signal.pthread_kill, (main, signal.SIGTERM))
        self._timer.daemon = True
        self._timer.start()
