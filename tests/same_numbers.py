"""The "same numbers" cases: short fits of today's configs (and one ``vaelab.evaluate``) whose
logged numbers are pinned in ``tests/same_numbers.json``, so that a refactor can be checked to
change no number (``tests/test_same_numbers.py``). Not a test module.

Regenerate the reference from the code of the commit C to pin, from the project root::

    OMP_NUM_THREADS=1 python -m tests.same_numbers --commit C --write tests/same_numbers.json

The fits then use C's vaelab and configs/ (``git archive``; without ``--commit``, PYTHONPATH's
vaelab of a clean checkout); the JSON records the commit, this command, the library versions and the
machine (:func:`machine`: float rounding depends on the CPU's vector instructions and on MKL's
choice of kernels for its vendor). Without ``--write`` it prints the JSON.

On another machine the pinned floats cannot be expected bit for bit, so the test runs the
reference commit's code here (:func:`run_reference_commit`) and compares with that instead.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # `python -m` puts the cwd first on sys.path: PYTHONPATH's vaelab (the reference) must win
    sys.path[:0] = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.helpers import SHARED_DATA, Command, metrics_rows, run_forked  # noqa: E402

# Every case (after data.root=tests.helpers.SHARED_DATA): the CPU, no compiling; 2 epochs of a
# few batches, a training row every 2 steps, 3 steps per Lightning call (5 batches: a full call
# and a short one), and the test's 20 importance samples in chunks of 8 (two full, one short).
COMMON = [
    "trainer.accelerator=cpu",
    "trainer.compile=false",
    "eval.compile=false",
    "trainer.progress_bar=false",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=2",
    "trainer.steps_per_call=3",
    "eval.ll_samples=20",
    "eval.chunk_size=8",
]

# name -> the words of `python -m vaelab.fit` after COMMON (later words win)
CASES: dict[str, list[str]] = {
    "bernoulli_elbo": ["model=bernoulli", "trainer.gradient_clip_val=5"],
    "iwae_2layer": ["experiment=iwae_2layer", "model.k=3"],
    "frey_gaussian_learned": ["data=frey", "model=gaussian_learned"],
    "dreg_beta_warmup": [
        "experiment=iwae_1layer", "model.estimator=dreg", "model.k=4", "model.beta=0.5", "optim.kl_warmup_epochs=1",
        "data.val_size=200",  # the preset validates on nothing: pin an IWAE validation bound too
    ],
    "stl_gaussian": ["model=gaussian", "data.binarize=none", "model.estimator=stl", "model.kl=mc", "model.k=2"],
    "kingma_mnist": ["experiment=kingma_mnist"],
}

# `python -m vaelab.evaluate` on this case's run directory, after the fits: IWAE bounds with k
# up to ll_samples (so the stream is the fit's test samples), fewer samples for E_q[z2|x]
EVALUATED_CASE = "iwae_2layer"
EVALUATE_WORDS = ["eval.iwae_k=[1,4,20]", "eval.posterior_mean_samples=10"]

SUMMARY_KEYS = ("test_ll", "test_elbo", "best_val_elbo", "steps", "epochs")
EVAL_KEYS = ("test_ll", "test_elbo", "test_iwae", "active_units", "unit_variances")
CLOCK_WORDS = ("time", "second")  # metrics.csv columns of wall-clock time: not reproducible
# the child's first stdout line: which vaelab it runs (the reference, or the code under test)
IMPORTED = "same_numbers: vaelab from "
REPORT_IMPORT = f"import vaelab; print({IMPORTED!r} + vaelab.__file__, flush=True)"
LIBRARIES = ("torch", "pytorch_lightning", "numpy")


class CaseFailed(RuntimeError):
    """A process of a case exited with a nonzero status."""


def machine() -> dict:
    """What decides float rounding besides the code: the CPU model and the vector instruction
    set PyTorch's kernels use, and the library versions."""
    import torch

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        None,
    ) if Path("/proc/cpuinfo").exists() else None
    from importlib.metadata import version

    return {
        "cpu": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": {name: version(name) for name in LIBRARIES},
    }


def run_reference_commit(commit: str, code_root: Path, root: Path, env: dict[str, str]) -> tuple[dict, set[str]]:
    """:func:`run_cases` with the code and configs of ``commit`` (``git archive`` of ``code_root``'s
    repository into ``root/code``), as the reference JSON would have been made on this machine."""
    code = root / "code"
    code.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(code_root), "archive", commit], capture_output=True, check=False)
    if archive.returncode != 0:
        raise CaseFailed(
            f"cannot check out the reference commit {commit[:10]} ({archive.stderr.decode().strip()}); "
            "clone the repository with its history"
        )
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    runs = root / "runs"
    runs.mkdir()
    return run_cases(runs, {**env, "PYTHONPATH": str(code)})


def fit_words(name: str, run_dir: Path | str, data_root: Path | str = SHARED_DATA) -> list[str]:
    """The words of case ``name``'s ``python -m vaelab.fit``."""
    return [f"data.root={data_root}", *COMMON, *CASES[name], f"run.dir={run_dir}"]


def recorded_words() -> dict:
    """The commands as the reference JSON records them (folders named, not spelled out)."""
    return {
        "fit": {name: fit_words(name, "<run dir>", "<tests.helpers.SHARED_DATA>") for name in CASES},
        "evaluate": [f"ckpt=<run dir of {EVALUATED_CASE}>", *EVALUATE_WORDS],
    }


def run_cases(root: Path, env: dict[str, str]) -> tuple[dict, set[str]]:
    """Runs every case at once as ``python -m vaelab.fit`` processes into ``root/<case>``, then
    ``vaelab.evaluate`` on ``root/EVALUATED_CASE``, with the driver's environment ``env`` (its
    PYTHONPATH decides which vaelab they run). Returns the numbers, ``{"fit": {case: {"columns",
    "rows", "summary"}}, "evaluate": {...}}`` (metrics.csv values as the strings written, clock
    columns left out), and the ``vaelab/__init__.py`` files the processes imported."""
    env = {key: value for key, value in env.items() if key != "VAELAB_CONFIG_DIR"}  # configs/ beside the vaelab run
    env["OMP_NUM_THREADS"] = "1"  # a sum's rounding may depend on the number of threads
    fits = [Command(fit_words(name, root / name), root, before=REPORT_IMPORT) for name in CASES]
    evaluate = Command(
        [f"ckpt={root / EVALUATED_CASE}", *EVALUATE_WORDS], root, module="vaelab.evaluate", before=REPORT_IMPORT
    )
    cwd = os.getcwd()
    os.chdir(root)  # the driver (`python -c`) puts its cwd first on sys.path: only env's PYTHONPATH may choose vaelab
    try:
        results = run_forked([fits, [evaluate]], env=env)
    finally:
        os.chdir(cwd)
    for name, result in zip([*CASES, f"{EVALUATED_CASE} (vaelab.evaluate)"], results):
        if result.returncode != 0:
            raise CaseFailed(f"case {name}: exit status {result.returncode}\n{result.stderr[-3000:]}")
    imported = {result.stdout.splitlines()[0].removeprefix(IMPORTED) for result in results}
    numbers = {"fit": {name: fit_numbers(root / name) for name in CASES}, "evaluate": eval_numbers(root / EVALUATED_CASE)}
    return numbers, imported


def fit_numbers(run_dir: Path) -> dict:
    """metrics.csv (columns, and rows as the strings written) and summary.json's SUMMARY_KEYS."""
    rows = metrics_rows(run_dir)
    columns = [c for c in (rows[0] if rows else {}) if not any(word in c for word in CLOCK_WORDS)]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "columns": columns,
        "rows": [[row[c] for c in columns] for row in rows],
        "summary": {key: summary[key] for key in SUMMARY_KEYS},
    }


def eval_numbers(run_dir: Path) -> dict:
    """eval.json's EVAL_KEYS."""
    results = json.loads((run_dir / "eval.json").read_text())
    return {key: results[key] for key in EVAL_KEYS}


def _git(code_root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(code_root), *args], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    import tempfile
    from importlib.metadata import version

    import vaelab

    parser = argparse.ArgumentParser(prog="python -m tests.same_numbers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="write the reference JSON here (else print it)")
    parser.add_argument(
        "--commit", help="run this commit's code (git archive of this repository) instead of PYTHONPATH's vaelab"
    )
    args = parser.parse_args(argv)
    code_root = Path(vaelab.__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="same-numbers-") as folder:
        if args.commit:
            commit = _git(code_root, "rev-parse", args.commit)
            numbers, _ = run_reference_commit(commit, code_root, Path(folder), dict(os.environ))
        else:
            if _git(code_root, "status", "--porcelain", "--untracked-files=no"):
                parser.error(f"{code_root} has uncommitted changes: pin the numbers of a commit")
            commit = _git(code_root, "rev-parse", "HEAD")
            numbers, imported = run_cases(Path(folder), dict(os.environ))
            if imported != {str(Path(vaelab.__file__))}:
                parser.error(f"the processes ran vaelab from {sorted(imported)}, not {vaelab.__file__}")
    reference = {
        "commit": commit,
        "command": "OMP_NUM_THREADS=1 python -m tests.same_numbers --commit <commit> --write tests/same_numbers.json",
        "versions": {name: version(name) for name in LIBRARIES},
        "machine": machine(),
        "words": recorded_words(),
        "numbers": numbers,
    }
    text = json.dumps(reference, indent=1) + "\n"
    if args.write:
        args.write.write_text(text)
        print(f"wrote {args.write}: the numbers of {reference['commit']} on this machine", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
