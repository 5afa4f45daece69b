"""Content digests of a run's inputs: its scene, its data and its weights.

When a run is written, metrics.json gets an `integrity` section with a sha256 digest of each
input file's *content*; when it is loaded, the digests are computed again and a file that no
longer matches is refused. So a scene.yaml edited after the run (another manifold family, say)
or a data.npz / snapshots.pt swapped in from another run stops every command with a message,
instead of being measured silently against the wrong geometry.

Content, not bytes:
  - the scene counts as its validated settings, re-serialised canonically, so comments, key
    order, quoting and formatting do not count. The sections that later commands rewrite with
    `--set` and the description are left out (`REWRITTEN_SECTIONS`): they choose what is
    measured or drawn, never the data or the weights the run stored;
  - arrays and tensors count as (name, dtype, shape, bytes), so the zip container of an .npz,
    its compression and torch's file layout do not.

Both sides read the files through the same readers (`simulator.runs.checks`), so the digests a
writer records are exactly those a loader recomputes. Runs written before digests existed have
no `integrity` section and load without this check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from simulator.errors import RunError
from simulator.runs.checks import read_npz, read_scene, read_torch

ALGORITHM = "sha256"

# Sections of the resolved scene that `sim measure/attack/render/animate/seeds --set ...` (and,
# for a real-image run, `sim measure/attack/render`) rewrite in scene.yaml after the run, and the
# free-text description: none of them shapes the data or the weights a run stores.
REWRITTEN_SECTIONS = {
    "synthetic": ("description", "measure", "render", "experiments"),
    "real": ("description", "measure", "dpi", "examples"),
}

# The files each kind of run protects with a digest (models.pt only when the run trained models).
DIGESTED_FILES = {
    "synthetic": ("scene.yaml", "data.npz", "snapshots.pt"),
    "real": ("scene.yaml", "points.npz", "models.pt"),
}


# --------------------------------------------------------------------------- digests


def content_digest(value: Any) -> str:
    """sha256 of a nested value (dicts, lists, numpy arrays, torch tensors, plain JSON values):
    every node is framed with its path, type, dtype and shape, so different structures never
    give the same byte stream. Dict keys are taken in sorted order."""
    digest = hashlib.sha256()
    _feed(digest, value, ())
    return digest.hexdigest()


def _frame(digest, *header: Any) -> None:
    digest.update(json.dumps(header, default=str).encode() + b"\n")


def _feed(digest, value: Any, path: tuple) -> None:
    if isinstance(value, torch.Tensor) and value.layout != torch.strided:
        # Runs store dense tensors only; a sparse one (damage) is framed by its indices and values.
        _frame(digest, path, "tensor", str(value.layout), str(value.dtype), list(value.shape))
        _feed(digest, [value.coalesce().indices(), value.coalesce().values()] if value.is_sparse else [], path)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        _frame(digest, path, "tensor", str(tensor.dtype), list(tensor.shape))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        _frame(digest, path, "array", value.dtype.str, list(value.shape))
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        keys = sorted(value, key=str)
        _frame(digest, path, "dict", [str(key) for key in keys])
        for key in keys:
            _feed(digest, value[key], path + (str(key),))
    elif isinstance(value, (list, tuple)):
        _frame(digest, path, "list", len(value))
        for index, item in enumerate(value):
            _feed(digest, item, path + (index,))
    else:
        _frame(digest, path, "value", type(value).__name__, value)


def scene_digest(config, excluded: tuple[str, ...]) -> str:
    """Digest of a validated scene or real-image experiment: its re-serialised YAML, without
    the `excluded` sections (those later commands rewrite)."""
    settings = yaml.safe_load(config.to_yaml())
    for section in excluded:
        settings.pop(section, None)
    return content_digest(settings)


# --------------------------------------------------------------------------- recording and checking


def run_integrity(folder: Path, kind: str) -> dict:
    """metrics.json's `integrity` section for the run files in `folder` as they are now, read
    back through the loader's own readers (so a loader recomputes exactly these digests)."""
    folder = Path(folder)
    excluded = REWRITTEN_SECTIONS[kind]
    digests = {"scene.yaml": scene_digest(read_scene(folder, kind), excluded)}
    for name in DIGESTED_FILES[kind][1:]:
        if (folder / name).is_file():
            stored = read_npz(folder / name) if name.endswith(".npz") else read_torch(folder / name)
            digests[name] = content_digest(stored)
    return {"algorithm": ALGORITHM, "scene_excludes": list(excluded), "files": digests}


def scene_excludes(metrics: dict) -> tuple[str, ...]:
    """The scene sections the run's recorded scene digest leaves out (as recorded, so a later
    change of `REWRITTEN_SECTIONS` does not invalidate older runs)."""
    integrity = metrics.get("integrity")
    if integrity is None:
        return REWRITTEN_SECTIONS[metrics.get("kind", "synthetic")]
    return tuple(integrity["scene_excludes"])


def check_digest(folder: Path, metrics: dict, name: str, actual: str, fix: str) -> None:
    """RunError when metrics.json recorded a digest of file `name` and `actual` differs. Runs
    without an `integrity` section (written before digests existed) are not checked."""
    integrity = metrics.get("integrity")
    if integrity is None:
        return
    expected = integrity["files"].get(name)
    if expected is None:
        raise RunError(f"{Path(folder) / 'metrics.json'}: its integrity section has no digest of {name}, which the "
                       f"run holds, so metrics.json is damaged or was edited. {fix}")
    if expected != actual:
        what = "its content differs from what the run wrote"
        if name == "scene.yaml":
            what = (f"its settings (all but {', '.join(scene_excludes(metrics))}, which later commands may change) "
                    f"differ from those the run was made with")
        raise RunError(f"{Path(folder) / name}: {what} (the {ALGORITHM} digest recorded in metrics.json does not "
                       f"match): the file was edited or replaced after the run, so the run's results no longer "
                       f"belong to it. Restore the original file, or {fix[0].lower()}{fix[1:]}")
