"""``python -m vaelab.sweep SWEEP.yaml [--count N] [--out DIR] [key=value ...]``: a W&B sweep, offline.

The sweep files in ``sweeps/`` are ordinary W&B sweep configurations: ``wandb sweep`` and
``wandb agent`` run them against a W&B server. This command runs the same files with no
server and no account. W&B's own open-source sweep engine (the package ``sweeps``: W&B's
search and early-termination algorithms) proposes every run from the sweep file and the
runs so far; each run is launched as ``wandb agent`` would launch it: the sweep's
``command`` with its macros expanded by wandb's own code (``${env}``, ``${interpreter}`` =
this Python, ``${args_no_hyphens}`` = ``key=value`` words, ...), as a subprocess, with
``run.dir=<out>/<run name>`` appended so that the run writes where the runner reads. While a
run trains, its ``metrics.csv`` is read every few seconds and handed to the engine's
Hyperband early termination when the sweep has ``early_terminate``; a run the engine stops
is sent SIGTERM, as the agent does. A finished run's metric history (``metrics.csv``) and
summary (the last value of every metric, and ``summary.json``) go back to the engine, so
``bayes`` learns from them.

Results land in ``<out>/results.csv`` and ``<out>/results.json``: every run's parameters,
metric, status and run directory, and the best run, which is also printed at the end. Each
run's console output is in ``<run dir>/output.log``. Running again with the same ``--out``
continues the sweep: first its interrupted runs, each from its checkpoint in its own directory
(``run.resume``), then ``--count`` more runs. Ctrl-C on the runner is passed on to the run,
which stops at a checkpoint; the runner then exits 130.

A sweep file that W&B's schema or engine rejects, or a proposed run that vaelab.fit would
reject (every combination of a grid; one draw otherwise), stops before any run with one
line on stderr and exit status 2.

One concern a module:

- ``engine``: W&B's sweep engine: the sweep file against its schema, proposals, early termination
- ``command``: a run's command line, built with wandb's own macro expansion, checked as vaelab.fit reads it
- ``process``: one run's process, supervised as wandb agent does (output log, SIGTERM, SIGKILL,
  signals passed on)
- ``runs``: the sweep folder and its table of runs (``results.csv``, ``results.json``)
- ``runner``: the loop that ties them together and prints a line a run
- ``cli``: the command line (``__main__`` runs it)
"""
