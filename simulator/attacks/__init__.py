"""Minimal adversarial perturbations within subspaces: one module per attack (`greedy_pgd`,
`bounded_pgd`, `deepfool`), the subspace operators they project with (`subspaces`, home of the
attack mode names), and the statistics built on their distances (`statistics`: MS, bootstrap)."""
