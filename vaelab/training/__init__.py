"""What runs while a model trains: the run directory and its lock, checkpoints written whole,
exact resume, interrupts and SLURM requeue, the clock, each DDP rank's noise, the metrics
loggers and what a fit prints."""
