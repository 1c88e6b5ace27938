"""A SIGHUP while `clawgate run` starts: held, not the end of the process.

SIGHUP's default action ends a process, and the server's own handler (a reload) is in place
only once clawgate's modules are loaded and its config read, a second or more after the start.
A SIGHUP meanwhile (`kill -HUP` after an edit, a logrotate hook, config management) would stop
a gateway that was asked to read its config again. From the first line of `python -m gateway`
it is noted here instead, and the server reloads once its handler is in place
(gateway/server.py). Other commands (`call` waiting on a closed terminal) end on it as before.

Light on purpose: imported before anything else of clawgate.
"""

from __future__ import annotations

import signal
from types import FrameType

_held = False


def hold() -> None:
    """From now on a SIGHUP is noted, not the end of the process."""
    signal.signal(signal.SIGHUP, _note)


def release() -> None:
    """SIGHUP's default action again (for the commands that are not `run`)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def take() -> bool:
    """Whether a SIGHUP came while held (since the last take)."""
    global _held
    held, _held = _held, False
    return held


def _note(signum: int, frame: FrameType | None) -> None:
    global _held
    _held = True
