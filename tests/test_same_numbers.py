"""Same numbers: the cases of ``tests/same_numbers.py``, run with this project's code, log exactly
the numbers of ``tests/same_numbers.json`` (metrics.csv's strings as written, summary.json's and
eval.json's floats bit for bit). On a machine other than the JSON's, the numbers are those of the
JSON's commit run here. After an intended change of numbers, regenerate the JSON as
``tests/same_numbers.py`` says."""

from __future__ import annotations

import json
import os
from importlib.metadata import version

import pytest

from tests import same_numbers
from tests.helpers import ADDED_COLUMNS, PROJECT, needs_frey, needs_mnist

REFERENCE_FILE = PROJECT / "tests" / "same_numbers.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text())
SHOWN = 30  # differences listed in one failure

# one run of every case serves all the tests, so each needs both data sets
pytestmark = [pytest.mark.slow, needs_mnist, needs_frey]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The numbers of every case, and the vaelab files the processes imported."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}  # the processes run this checkout's vaelab, whatever is installed
    return same_numbers.run_cases(tmp_path_factory.mktemp("same-numbers"), env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The pinned numbers: the JSON's, or on another machine those of its commit's code run here."""
    if REFERENCE.get("machine") == same_numbers.machine():
        return REFERENCE["numbers"]
    numbers, _ = same_numbers.run_reference_commit(
        REFERENCE["commit"], PROJECT, tmp_path_factory.mktemp("same-numbers-reference"), dict(os.environ)
    )
    return numbers


def same(a, b) -> bool:
    """Equal as JSON writes them: floats bit for bit (NaN too), 1 is not 1.0, None is null."""
    return json.dumps(a) == json.dumps(b)


def differences(actual, reference, where: str):
    """``where``-named lines, one for each value of ``actual`` that is not ``reference``'s."""
    if isinstance(reference, dict) and isinstance(actual, dict):
        if actual.keys() != reference.keys():
            yield f"{where}: keys {sorted(actual)}, reference {sorted(reference)}"
        for key in [key for key in reference if key in actual]:
            yield from differences(actual[key], reference[key], f"{where}[{key!r}]")
    elif isinstance(reference, list) and isinstance(actual, list):
        if len(actual) != len(reference):
            yield f"{where}: {len(actual)} values, reference {len(reference)}"
        for index, (a, r) in enumerate(zip(actual, reference)):
            yield from differences(a, r, f"{where}[{index}]")
    elif not same(actual, reference):
        yield f"{where}: {json.dumps(actual)}, reference {json.dumps(reference)}"


def fit_differences(actual: dict, reference: dict, case: str):
    """metrics.csv's columns (the reference's, in order, and only ADDED_COLUMNS besides), row
    count and the reference columns' cells, and the pinned summary.json values."""
    columns = reference["columns"]
    kept = [c for c in actual["columns"] if c not in ADDED_COLUMNS - set(columns)]
    if kept != columns:
        yield f"{case}: metrics.csv columns {actual['columns']}, reference {columns}"
    if len(actual["rows"]) != len(reference["rows"]):
        yield f"{case}: metrics.csv has {len(actual['rows'])} rows, reference {len(reference['rows'])}"
    if kept == columns:
        where = [actual["columns"].index(c) for c in columns]
        for index, (row, pinned) in enumerate(zip(actual["rows"], reference["rows"]), start=1):
            at = ", ".join(f"{c} {v}" for c, v in zip(columns, pinned) if c in ("epoch", "step"))
            for column, position, expected in zip(columns, where, pinned):
                if row[position] != expected:
                    yield f"{case}: metrics.csv row {index} ({at}), column {column}: {row[position]!r}, reference {expected!r}"
    yield from differences(actual["summary"], reference["summary"], f"{case}: summary.json")


def assert_none(found, case: str) -> None:
    found = list(found)
    versions = {name: version(name) for name in same_numbers.LIBRARIES}
    note = "" if versions == REFERENCE["versions"] else f"\n(reference made with {REFERENCE['versions']}; this is {versions})"
    if REFERENCE.get("machine") != same_numbers.machine():
        note += f"\n(reference: commit {REFERENCE['commit'][:10]} run on this machine; the JSON's machine is {REFERENCE.get('machine')})"
    more = f"\n... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    assert not found, (
        f"{case}: {len(found)} difference(s) from {REFERENCE_FILE.name} (commit {REFERENCE['commit'][:10]}):\n"
        + "\n".join(found[:SHOWN]) + more + note
    )


def test_the_reference_pins_these_cases():
    assert REFERENCE["words"] == same_numbers.recorded_words(), (
        f"the cases of same_numbers.py are not those of {REFERENCE_FILE.name}: regenerate it from the reference commit"
    )


def test_the_processes_ran_this_checkout(ran):
    _, imported = ran
    assert imported == {str(PROJECT / "vaelab" / "__init__.py")}


@pytest.mark.parametrize("case", list(same_numbers.CASES))
def test_fit_numbers(ran, reference, case):
    numbers, _ = ran
    assert_none(fit_differences(numbers["fit"][case], reference["fit"][case], case), case)


def test_evaluate_numbers(ran, reference):
    numbers, _ = ran
    case = f"{same_numbers.EVALUATED_CASE} (vaelab.evaluate)"
    assert_none(differences(numbers["evaluate"], reference["evaluate"], f"{case}: eval.json"), case)
