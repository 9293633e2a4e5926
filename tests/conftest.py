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


# A test outside `slow` that computes for longer than this fails: the fast tier must stay fast.
# Its CPU time is judged (its own and its child processes'), which other jobs on the machine do
# not inflate as they do wall time; a test that waits instead fails past WAIT_FACTOR times it.
FAST_TEST_LIMIT_S = float(os.environ.get("VAELAB_FAST_TEST_LIMIT_S", "5"))
WAIT_FACTOR = 4


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _keep_cpu_seconds(item, phase: str, start: float) -> None:
    item.vaelab_cpu_s = {**getattr(item, "vaelab_cpu_s", {}), phase: _cpu_seconds() - start}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """Under CI=true a missing real dataset fails the test (tests/helpers: needs_real_data); the
    CPU time of setting up its fixtures is kept for the fast tier's limit."""
    for mark in item.iter_markers("real_data"):
        if mark.args and mark.args[0] is not None:
            pytest.fail(f"{mark.args[0]}; CI=true runs every real-data test", pytrace=False)
    start = _cpu_seconds()
    yield
    _keep_cpu_seconds(item, "setup", start)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = _cpu_seconds()
    yield
    _keep_cpu_seconds(item, "call", start)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.passed and call.when in ("setup", "call") and item.get_closest_marker("slow") is None:
        # A setup that starts the SLURM cluster happens once per machine; CI starts it before pytest.
        starts_cluster = call.when == "setup" and item.get_closest_marker("slurm") is not None
        cpu = getattr(item, "vaelab_cpu_s", {}).get(call.when, 0.0)
        over = cpu > FAST_TEST_LIMIT_S or call.duration > WAIT_FACTOR * FAST_TEST_LIMIT_S
        if over and not starts_cluster:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid}: its {call.when} took {cpu:.1f} s of CPU ({call.duration:.1f} s), over the fast tier's "
                f"{FAST_TEST_LIMIT_S:g} s (or {WAIT_FACTOR}x that waiting): mark it @pytest.mark.slow or make it faster "
                "(VAELAB_FAST_TEST_LIMIT_S changes the limit)"
            )


# The slow tier's files, longest first (their seconds in CI on the 2-core machine, Dec 2026:
# test_slurm.py's one fixture of 120 s, mostly waiting for SLURM, then 180, 156, 112, ...).
# Under xdist (.ci/run: -n 2 --dist loadfile) the files go to the workers in this order, each
# worker taking the next as it finishes one, so that no long file starts last and leaves the
# other worker idle at the end; xdist's own reordering (by number of tests per file) is off.
LONGEST_FIRST = [
    "test_slurm.py", "test_fit.py", "test_sweep.py", "test_interrupts.py", "test_evaluate.py",
    "test_part_fits.py", "test_exact_resume.py", "test_run_integrity.py", "test_os_faults.py",
    "test_extending.py", "test_ddp.py", "test_gpu_check.py", "test_harness.py", "test_console.py",
    "test_training_steps.py", "test_api.py", "test_same_numbers.py", "test_old_checkpoints.py",
]  # fmt: skip


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Under xdist, the files of LONGEST_FIRST first, in its order; the others after them, as
    collected; the tests of a file in their own order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
