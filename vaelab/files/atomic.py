"""Files written whole or not at all: a temporary file beside the target, renamed onto it.

An OS fault on the way (a full disk, a read-only file system, a file in the way) is a
:class:`~vaelab.errors.ResultsWriteError` naming the target, and leaves no temporary file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from vaelab.files.write_faults import writing

# Temporary files are named ".partial-<pid>-<random>.tmp", never after their target: Lightning
# takes any name holding "hpc_ckpt_" for an hpc checkpoint (and reads a version from its digits),
# and ModelCheckpoint and the sbatch scripts look at every *.ckpt.
PARTIAL_PREFIX = ".partial-"


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then rename it
    onto ``path``: a reader, a kill -9 or a full disk never leaves half a file at ``path``."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path.parent)
        try:
            write(tmp)
            _fsync(tmp)
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):  # on a file system gone read-only: the next writer removes it
                tmp.unlink(missing_ok=True)
            raise
        _fsync(path.parent)  # the rename itself survives a crash of the machine


def probe_write(folder: Path) -> None:
    """Write a byte to a temporary file in ``folder`` and remove it: a folder that cannot be
    written (read-only, not yours, a full disk) raises its ResultsWriteError now."""
    with writing(folder):
        tmp = _temporary(folder)
        try:
            tmp.write_bytes(b"\0")
            _fsync(tmp)  # where space is only claimed on flushing (NFS)
        finally:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)


def _temporary(folder: Path) -> Path:
    return folder / f"{PARTIAL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Write text to path so that a reader never sees half a file."""
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files below ``folder`` of writes whose process died before the rename
    (a kill -9 while a checkpoint was written); return them. Files of live processes stay."""
    removed = []
    for tmp in folder.rglob(f"{PARTIAL_PREFIX}*.tmp"):
        pid = tmp.name[len(PARTIAL_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
