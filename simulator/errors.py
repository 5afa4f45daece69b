"""Errors a user can fix. The CLI prints them as one paragraph and exits with code 2."""


class SimulatorError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class SceneError(SimulatorError):
    """A scene file is missing, malformed, or asks for something impossible."""


class RunError(SimulatorError):
    """A run directory is missing, incomplete, or from an unknown format version."""


class TrainingError(SimulatorError):
    """Training could not finish (for example the loss diverged)."""
