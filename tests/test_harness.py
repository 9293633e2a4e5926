"""The test harness itself: tests find the real datasets where vaelab does (``VAELAB_DATA_DIR``,
else ``../shared/data``), a missing one skips a test except under ``CI=true``, where it fails,
and a test outside ``slow`` that runs past the fast tier's limit fails (tests/conftest.py).

Each case runs pytest in a new process on a small test file, with tests/conftest.py as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import MNIST_FILES, MNIST_RAW, PROJECT

pytestmark = pytest.mark.slow

CASES = '''
import time
import pytest
from tests.helpers import MNIST_RAW, needs_mnist

@needs_mnist
def test_reads_real_mnist():
    assert (MNIST_RAW / "t10k-images-idx3-ubyte.gz").stat().st_size > 1_000_000

def test_unmarked_and_slow():
    start = time.process_time()
    while time.process_time() - start < 0.6:  # computes: CPU time
        pass

def test_unmarked_and_waiting():
    time.sleep(1.5)  # waits past 4 x the limit

def test_unmarked_and_briefly_waiting():
    time.sleep(0.6)  # waits, but under 4 x the limit: what a loaded machine does to a fast test

@pytest.mark.slow
def test_marked_and_slow():
    time.sleep(0.6)
'''


def outcomes(tmp_path: Path, **env: str) -> dict[str, tuple[str, str]]:
    """test name -> (passed | skipped | failed, message) of one pytest process on CASES."""
    cases, report = tmp_path / "test_cases.py", tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.xml"
    cases.write_text(CASES)
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "VAELAB_DATA_DIR", "PYTEST_ADDOPTS")}
    environ |= {"PYTHONPATH": str(PROJECT), "VAELAB_FAST_TEST_LIMIT_S": "0.3", **env}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", os.devnull, "-p", "no:cacheprovider",
         "-p", "no:xdist", f"--junitxml={report}", str(cases)],
        cwd=PROJECT, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        found = [(child.tag, child.get("message", "")) for child in case if child.tag in ("skipped", "failure", "error")]
        results[case.get("name")] = found[0] if found else ("passed", "")
    return results


def test_data_dir_skip_ci_failure_and_the_fast_tier_limit(tmp_path):
    empty = tmp_path / "no data"
    empty.mkdir()
    outside_ci = outcomes(tmp_path, VAELAB_DATA_DIR=str(empty))
    status, message = outside_ci["test_reads_real_mnist"]
    assert status == "skipped" and str(empty / "MNIST" / "raw") in message, outside_ci
    status, message = outside_ci["test_unmarked_and_slow"]
    assert status == "failure" and "of CPU" in message and "over the fast tier's 0.3 s" in message, outside_ci
    assert "mark it @pytest.mark.slow" in message, outside_ci
    assert outside_ci["test_unmarked_and_waiting"][0] == "failure", outside_ci
    assert outside_ci["test_unmarked_and_briefly_waiting"][0] == "passed", outside_ci
    assert outside_ci["test_marked_and_slow"][0] == "passed", outside_ci

    in_ci = outcomes(tmp_path, VAELAB_DATA_DIR=str(empty), CI="true")
    status, message = in_ci["test_reads_real_mnist"]
    assert status == "error" and "real MNIST not found" in message and "CI=true" in message, in_ci  # fails in setup

    if all((MNIST_RAW / name).is_file() for name in MNIST_FILES):  # where this run found MNIST, so do they
        assert outcomes(tmp_path, VAELAB_DATA_DIR=str(MNIST_RAW.parents[1]), CI="true")["test_reads_real_mnist"][0] == "passed"
