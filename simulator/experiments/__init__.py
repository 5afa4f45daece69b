"""The classic experiments that go beyond one training run: features-not-bugs relabelling
(`relabel`), seed agreement (`seed_agreement`), the plain twin of an adversarially trained scene
(`adversarial_comparison`) and one-field sweeps (`sweep`). Adversarial training itself lives in
`simulator.training.adversarial` (it is a way of training) and stretchy-feature data in
`simulator.labels`. Each experiment returns a record; simulator.pipeline stores and draws it."""
