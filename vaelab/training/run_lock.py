"""One writer per run directory: an exclusive ``flock`` on ``<run dir>/.lock`` while a fit runs.

The operating system releases the lock when its process ends, however it ends (kill -9, a
node failure), so a ``.lock`` file left behind by a dead process never blocks anyone: only a
live process holding it does. The file names its holder (pid and host) for the error line.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vaelab.errors import RunDirInUseError
from vaelab.files.atomic import remove_leftovers
from vaelab.files.write_faults import writing

LOCK_FILE = ".lock"


@contextmanager
def one_writer(run_dir: Path, is_writer: bool = True) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` while the block runs; raise :class:`RunDirInUseError` at once
    if another process holds it. ``is_writer=False`` (DDP ranks other than 0) takes no lock.

    Once it holds the lock, it removes the temporary files that writers killed mid-write left
    behind. A run directory this call had to create, and in which nothing but the lock was
    written (the fit stopped early), is removed again. One that cannot be made or locked
    (read-only, a file in its way) raises its :class:`~vaelab.errors.ResultsWriteError` at once.
    """
    if not is_writer:
        yield
        return
    created = not run_dir.exists()
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    try:
        with writing(path):
            fd = _lock(path)
    except BaseException:
        if created:
            with suppress(OSError):
                run_dir.rmdir()
        raise
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        with writing(run_dir):
            remove_leftovers(run_dir)  # half-written files of an earlier writer that was killed
        yield
    finally:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
            path.unlink()  # before the lock is released: a process waiting on it sees the file gone
            run_dir.rmdir()
        os.close(fd)  # releases the lock


def wait_for_writer(run_dir: Path, seconds: float) -> bool:
    """Wait up to ``seconds`` until no process holds ``<run_dir>/.lock``; whether none does."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
        finally:
            os.close(fd)
        time.sleep(0.1)


def _lock(path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirInUseError(
                f"run directory {path.parent} is in use by another vaelab.fit ({_holder(path)}): "
                "wait for it to end, or choose another run.dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd
        os.close(fd)  # locked a file its holder removed on its way out: lock the current one


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "holder unknown"
