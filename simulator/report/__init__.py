"""Reports and tables, read from stored results only: number formatting, the HTML kit, the run
report, the attack and verdict tables, the synthetic-vs-real comparison."""
