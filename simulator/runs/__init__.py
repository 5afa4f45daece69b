"""The run directory: one format for every kind of run, one loader, atomic writes."""
