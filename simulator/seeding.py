"""The one place where randomness is seeded.

Every random stage of a run draws from its own stream derived from the scene's seed, so that
changing, say, the number of training steps never changes the data, and two runs of the same
scene give the same numbers on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch

# Stream ids: never renumber these, or old scenes stop reproducing their numbers.
STREAMS = {"labels": 1, "data": 2, "init": 3, "batches": 4, "measure": 5, "attacks": 6,
           # the classic experiments (issue 7)
           "relabel": 8, "relabel_model": 9, "seed_agreement": 11,
           # the real-image module
           "real_split": 101, "autoencoder_batches": 102, "autoencoder_init": 103,
           "classifier_init": 104, "classifier_batches": 105}


def numpy_rng(seed: int, stream: str) -> np.random.Generator:
    """Independent numpy generator for one stage of a run."""
    return np.random.default_rng([STREAMS[stream], seed])


def torch_seed(seed: int, stream: str) -> int:
    """A torch seed for one stage (torch generators take a single integer)."""
    return int(numpy_rng(seed, stream).integers(0, 2**62))


def torch_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(torch_seed(seed, stream))
    return generator
