"""The test harness itself: tests find the real datasets where vaelab does (``VAELAB_DATA_DIR``,
else ``../shared/data``), a missing one skips a test except under ``CI=true``, where it fails,
and a test outside ``slow`` that runs past the fast tier's limit fails (tests/conftest.py).

Each case runs pytest on a small test file, with tests/conftest.py as a plugin, in a child process."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import MNIST_FILES, MNIST_RAW, PROJECT, Command, run_forked

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


def outcomes(tmp_path: Path, *envs: dict[str, str]) -> list[dict[str, dict[str, tuple[str, str]]]]:
    """For each environment, test name -> (passed | skipped | failure | error, message) of a
    pytest run on CASES; the runs are forked from one Python (tests/helpers: run_forked), each
    importing tests/conftest.py and tests/helpers afresh, after its environment is set."""
    cases = tmp_path / "test_cases.py"
    cases.write_text(CASES)
    reports = [tmp_path / f"report-{index}.xml" for index in range(len(envs))]
    runs = [
        Command(["-p", "tests.conftest", "-c", os.devnull, "-p", "no:cacheprovider", "-p", "no:xdist",
                 f"--junitxml={report}", str(cases)], PROJECT, module="pytest", env=env)
        for report, env in zip(reports, envs)
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "VAELAB_DATA_DIR", "PYTEST_ADDOPTS")}
    run_forked([runs], env={**environ, "PYTHONPATH": str(PROJECT), "VAELAB_FAST_TEST_LIMIT_S": "0.3"}, timeout=120)
    return [_results(report) for report in reports]


def _results(report: Path) -> dict[str, tuple[str, str]]:
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        found = [(child.tag, child.get("message", "")) for child in case if child.tag in ("skipped", "failure", "error")]
        results[case.get("name")] = found[0] if found else ("passed", "")
    return results


def test_data_dir_skip_ci_failure_and_the_fast_tier_limit(tmp_path):
    empty = tmp_path / "no data"
    empty.mkdir()
    envs = [{"VAELAB_DATA_DIR": str(empty)}, {"VAELAB_DATA_DIR": str(empty), "CI": "true"}]
    found_mnist = all((MNIST_RAW / name).is_file() for name in MNIST_FILES)
    if found_mnist:  # where this run found MNIST, so do they
        envs.append({"VAELAB_DATA_DIR": str(MNIST_RAW.parents[1]), "CI": "true"})
    outside_ci, in_ci, *with_data = outcomes(tmp_path, *envs)

    status, message = outside_ci["test_reads_real_mnist"]
    assert status == "skipped" and str(empty / "MNIST" / "raw") in message, outside_ci
    status, message = outside_ci["test_unmarked_and_slow"]
    assert status == "failure" and "of CPU" in message and "over the fast tier's 0.3 s" in message, outside_ci
    assert "mark it @pytest.mark.slow" in message, outside_ci
    assert outside_ci["test_unmarked_and_waiting"][0] == "failure", outside_ci
    assert outside_ci["test_unmarked_and_briefly_waiting"][0] == "passed", outside_ci
    assert outside_ci["test_marked_and_slow"][0] == "passed", outside_ci

    status, message = in_ci["test_reads_real_mnist"]
    assert status == "error" and "real MNIST not found" in message and "CI=true" in message, in_ci  # fails in setup
    if found_mnist:
        assert with_data[0]["test_reads_real_mnist"][0] == "passed", with_data
