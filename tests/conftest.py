"""Fixtures shared by the test modules (shared constants and functions: tests/helpers/)."""

import os

# One thread per process, for this one and every process a test starts (they inherit the
# variable; it must be set before torch is imported): on shared 2-core machines a second thread
# mostly waits for a core (docs/testing.md#threads-and-helpers). Set OMP_NUM_THREADS to use more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ["OMP_NUM_THREADS"].isdigit():
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def float64():
    """Double precision and a fixed seed, so tolerances test formulas rather than rounding."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)
