"""Fixtures shared by the test modules (shared constants and functions: tests/helpers.py)."""

import pytest
import torch


@pytest.fixture
def float64():
    """Double precision and a fixed seed, so tolerances test formulas rather than rounding."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)
