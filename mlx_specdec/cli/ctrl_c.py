"""Ctrl-C while an answer streams, taken at a step boundary rather than wherever Python happens to be.

Python raises ``KeyboardInterrupt`` at the next bytecode the main thread runs. When that bytecode
belongs to a finaliser (a generator or array collected mid-step) the exception is reported as
"ignored" and lost, and the answer runs on to its end. So while an answer streams, the first Ctrl-C
only sets a flag that the loop checks between steps (and between prefill chunks); a second one
raises at once, for a step that never returns.

Example::

    with DeferredCtrlC() as ctrl_c:
        for piece in pieces:
            show(piece)
            ctrl_c.check()   # raises KeyboardInterrupt if Ctrl-C came during that step
"""

from __future__ import annotations

import signal
import threading


class DeferredCtrlC:
    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "DeferredCtrlC":
        python_handles_it = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if python_handles_it and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_ctrl_c)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_ctrl_c(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since the stream began."""
        if self.requested:
            raise KeyboardInterrupt
