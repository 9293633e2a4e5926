"""Writing a run's files safely, for training and evaluation alike: whole or not at all, and OS
faults (a full disk, a read-only folder) as one line."""
