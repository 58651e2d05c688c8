"""What the harness reads of the machine and how it writes files: ``/proc`` memory figures and
atomic writes. Nothing heavy is imported here: ``reports.memory``'s worker processes use it."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path


def mem_available() -> float:
    """Bytes the kernel reports available (``MemAvailable``), or inf where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return math.inf


def proc_status() -> dict:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def atomic_write(path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then ``os.replace`` it
    into place: an interrupted run never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if isinstance(data, bytes):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the report is not
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
