"""What every trainer and both parallel paths share, below `training/` and `parallel/`: the train state,
the guarded update, and the run's independent PRNG streams."""
