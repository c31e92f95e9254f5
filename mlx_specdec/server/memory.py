"""The server process's resident memory, for /health and the load test."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def resident_bytes(pid: int | str = "self") -> int | None:
    """VmRSS of ``pid`` from /proc (Linux); elsewhere the peak RSS of this process; None if unknown."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid != "self":
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
