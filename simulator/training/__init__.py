"""Training: the loop with boundary snapshots, adversarial batches, stacked multi-seed training."""
