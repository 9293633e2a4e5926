"""OS faults while writing results, as one :class:`~vaelab.errors.ResultsWriteError`: which
path, why, and what to do about it.

Only the write calls into a run directory or an output folder go through :func:`writing`, so
an ``OSError`` while reading data or a checkpoint keeps its own message. An ``OSError``
without an errno (PIL's encoder errors, say) is no OS fault and is left as it is.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaelab.errors import ResultsWriteError

# errno: the few words for the error line, and what to do about the path it names.
REASONS = {
    errno.ENOSPC: ("no space left on device", "free space on that disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.EACCES: ("permission denied", "make it writable for you"),
    errno.EPERM: ("operation not permitted", "make it writable for you"),
}
# A file where a directory must be, or a directory where a file must be.
IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


@contextmanager
def writing(target: Path) -> Iterator[None]:
    """Turn an OS fault raised in the block, a write of ``target``, into a ResultsWriteError."""
    try:
        yield
    except OSError as error:
        if error.errno is None:
            raise
        raise write_error(Path(target), error) from error


def write_error(target: Path, error: OSError) -> ResultsWriteError:
    """The error line for ``error``, raised while writing ``target`` (a file or a directory).

    It names ``target`` (not the temporary file of an atomic write), a directory above it
    that could not be made, or the file of the wrong kind in its way.
    """
    if error.errno in IN_THE_WAY:
        blocker = _in_the_way(target, error.errno)
        if blocker is not None:
            kind = "a directory, not a file" if blocker.is_dir() else "a file, not a directory"
            reason = f"it is {kind}" if blocker == target else f"{blocker} is {kind}"
            return ResultsWriteError(target, reason, "move it out of the way")
    failed = Path(os.fsdecode(error.filename)) if error.filename is not None else None
    named = failed if failed is not None and failed in target.parents else target
    reason, remedy = REASONS.get(error.errno, ((error.strerror or str(error)).lower(), "check that disk"))
    return ResultsWriteError(named, reason, remedy)


def _in_the_way(target: Path, code: int) -> Path | None:
    """The first path from the root down to ``target`` that is not a directory; ``target``
    itself for a directory where a file must be (``EISDIR``); None if nothing is in the way."""
    for path in [*reversed(target.parents), target]:
        if not os.path.lexists(path):
            return None
        if not path.is_dir():
            return path
    return target if code == errno.EISDIR else None
