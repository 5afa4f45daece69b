"""Real-image module: the paper's autoencoder manifold on real images, with the random control.

    datasets.py      offline image data (digits, Fashion-MNIST, idx, CIFAR-10, image folders, photos)
    autoencoder.py   k-dim autoencoder; decoder-Jacobian tangent bases by batched forward mode
    classifiers.py   small MLP / CNN classifiers on flattened images
    experiment.py    the experiment's stages: tau, attacks in every mode, MS (compute only)
    rerun.py         the measure / attack stages again on a saved real run (no retraining)
    pretrained.py    EfficientNet-Lite0 from its wheel (the `pretrained` extra), shipped photos
    calibration.py   the autoencoder method on synthetic scenes, where the true tangent spaces are known

The experiment file's schema is simulator.config.real; simulator.pipeline.run_real orders the
stages, stores their results and draws the figures (simulator.render, simulator.report).
"""
