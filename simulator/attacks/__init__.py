"""Minimal adversarial perturbations within subspaces: the attack algorithms, the subspace
operators they project with, and the statistics built on their distances (MS, bootstrap)."""
