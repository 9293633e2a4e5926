"""examples/first_run.ipynb runs from top to bottom in a real Jupyter kernel (ipykernel, on the
Python of this test) on real MNIST, and shows what its text says it shows."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT, SHARED_DATA, needs_mnist

NOTEBOOK = PROJECT / "examples" / "first_run.ipynb"
# The mean log p(x) the last cell prints: a model of one short epoch scores between what the
# digits' mean image gives (about -206 nats) and what coin flips give (784 log 2 = -543.4).
LOG_LIKELIHOOD_LINE = re.compile(r"mean log p\(x\) of 8 test images \(1000 importance samples\): (-?[\d.]+) nats")


def test_the_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
@needs_mnist
def test_the_notebook_runs_in_a_jupyter_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # which Python and which vaelab the kernel ran: this test's, and this checkout's
    notebook.cells.append(nbformat.v4.new_code_cell("import sys, vaelab; print(sys.executable); print(vaelab.__file__)"))
    monkeypatch.setenv("VAELAB_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "work"  # the runs/ folder the notebook's run writes lands here
    work.mkdir()
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pictures) == 3, "samples, the learning curve, reconstructions"

    executable, vaelab_file = text.strip().splitlines()[-2:]
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(vaelab_file).resolve() == PROJECT / "vaelab" / "__init__.py"

    runs = list(work.glob("runs/mnist-bernoulli/*/summary.json"))
    assert len(runs) == 1, "one run, trained in the kernel's working directory"
    match = LOG_LIKELIHOOD_LINE.search(text)
    assert match, text[-2000:]
    log_likelihood = float(match.group(1))
    assert math.isfinite(log_likelihood) and -784 * math.log(2) < log_likelihood < -100, log_likelihood
    assert "test log p(x) " in text and "run directory:" in text
