"""Dataset files shared steps: a one-line error for a missing or undownloadable file, and
reading a MATLAB .mat file whose damage loadmat reports in many ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from torchvision.datasets.utils import download_url

from vaelab.errors import DataError

REFETCH = "delete it and download again, or point data.root at a complete copy"


def elsewhere(relative: str) -> str:
    return f"point data.root=... (env VAELAB_DATA_DIR) at a folder that holds {relative}"


def ensure_files(what: str, root: str | Path, files: dict[str, str], download: bool) -> None:
    """Makes sure each file (path relative to ``root`` -> its URL) exists: downloads the
    missing ones or raises one DataError naming them and the folder. The publishers give no
    checksums, so the readers check each file's format instead."""
    root = Path(root)
    missing = {relative: url for relative, url in files.items() if not (root / relative).is_file()}
    if not missing:
        return
    folder = (root / next(iter(files))).parent
    where = elsewhere(", ".join(files))
    if not download:
        names = ", ".join(str(root / relative) for relative in missing)
        raise DataError(f"{what} file(s) not found: {names}; set data.download=true to download them, or {where}")
    for relative, url in missing.items():
        path = root / relative
        try:
            download_url(url, root=str(path.parent), filename=path.name)
        except Exception as err:  # no network, HTTP errors: all end the same way
            reason = " ".join(str(err).split())
            raise DataError(
                f"could not download {url} to {path} ({reason}); fetch it by hand into {folder}, or {where}"
            ) from err


def read_mat_arrays(what: str, path: Path, keys: dict[str, tuple[int | None, int | None]]) -> dict[str, np.ndarray]:
    """The 2-D numeric arrays ``keys`` (name -> expected shape, None: any size) of a .mat file."""
    try:
        contents = scipy.io.loadmat(str(path))
    except Exception as err:  # loadmat signals a damaged file with many exception types
        reason = " ".join(str(err).split())
        raise DataError(f"{what} file {path} is truncated or corrupt ({reason}); {REFETCH}") from err
    arrays = {}
    for key, shape in keys.items():
        if key not in contents:
            found = ", ".join(name for name in contents if not name.startswith("__")) or "none"
            raise DataError(f"{what} file {path} has no variable '{key}' (variables: {found}); {REFETCH}")
        array = contents[key]
        fits = (
            isinstance(array, np.ndarray) and array.ndim == 2 and np.issubdtype(array.dtype, np.number)
            and all(want is None or got == want for got, want in zip(array.shape, shape))
        )
        if not fits:
            described = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            expected = " x ".join("N" if n is None else str(n) for n in shape)
            raise DataError(f"{what} file {path}: variable '{key}' is {described}, expected {expected} numbers; {REFETCH}")
        arrays[key] = array
    return arrays
