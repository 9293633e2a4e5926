"""What a run leaves behind: its directory, metrics loggers, clock, pictures and summary."""
