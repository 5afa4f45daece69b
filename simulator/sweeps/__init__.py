"""Sweeps: many runs of one scene (`sim sweep FILE`), on this machine or a Ray cluster.

    sweep = load_sweep("scenes/sweeps/dimension.yaml")      # simulator.config.sweep: expanded, validated
    outcome = run_sweep(sweep, "renders")                   # runner.py: skips finished runs, records failures
    table = write_sweep_table(outcome.folder, sweep)        # table.py: sweep.csv / sweep.parquet
    plot_sweep(table, x="manifold.ambient_dim", y=["ms"])   # plot.py: seed means with error bars
"""
