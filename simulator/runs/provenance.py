"""What produced a run: package versions, Python, platform and (in a git checkout) the commit.

Stored as metrics.json's `provenance` section, so a number in a paper can be traced to the code
that computed it. Everything here is the same for two runs on one machine and one checkout, so
it does not spoil byte-for-byte reproducibility (the device is recorded beside it, per stage).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# The packages whose versions can change a number: the simulator, its numerics, its I/O.
PACKAGES = ("dimpled-manifold-simulator", "torch", "numpy", "scipy", "scikit-learn", "pydantic", "pyyaml")
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding simulator/ (when not a wheel)


def provenance() -> dict:
    """{"packages": {name: version}, "python", "platform", "git": {"commit", "dirty"} or None}."""
    return {
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "git": git_state(SOURCE_ROOT),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_state(root: Path) -> dict | None:
    """The checkout's commit and whether tracked files differ from it; None outside a git
    checkout (an installed wheel) or when git is missing or slow."""
    if not (root / ".git").exists():
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changed)}


def _git(root: Path, *arguments: str) -> str:
    completed = subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True, timeout=10,
                               check=True, stdin=subprocess.DEVNULL)
    return completed.stdout.strip()


if __name__ == "__main__":  # python -m simulator.runs.provenance
    import json

    json.dump(provenance(), sys.stdout, indent=2)
