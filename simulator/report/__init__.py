"""Reports and tables, read from stored results only: the HTML kit, the run report, the attack,
verdict and seed-agreement tables, the synthetic-vs-real comparison, the sweep and
adversarial-training reports. Numbers are printed with simulator.formatting."""
