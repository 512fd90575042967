"""Training: batches, the loop, the schedule, evaluation, the run directory, DDP."""
