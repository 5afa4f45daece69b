"""The classic experiments that go beyond one training run (issue 7): features-not-bugs
relabelling (`relabel`) and seed agreement (`seed_agreement`). Adversarial training lives in
`simulator.training.loop` (it is a way of training) and stretchy-feature data in `simulator.labels`."""
