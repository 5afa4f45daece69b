"""Every shipped scene, rerun through `sim run`, measures exactly the pinned golden numbers.

The golden file (tests/golden_numbers.json) was written by `python tests/golden.py` before the
code was reorganised; a change that is meant to move a number regenerates it and says why in
its commit. Runs are on the CPU, where training and measurement are deterministic.
"""

from __future__ import annotations

import json

import pytest
from golden import (
    GOLDEN_FILE,
    differences,
    golden_numbers,
    missing_requirement,
    run_case,
)

GOLDEN = json.loads(GOLDEN_FILE.read_text())


# Tiny cases that still take 20 s to a minute each on 2 cores (n = 3072 and n = 500 at a tiny
# budget; the two photo experiments, whose pretrained EfficientNet costs the same at any budget):
# run with the slow cases, beside their full-budget versions, to keep the quick suite quick. The
# quick suite still runs the photo path (tests/test_real.py's pretrained-classifier tests).
HEAVY_TINY = {"tiny/cifar_sphere32_3072", "tiny/gilmer_spheres_500", "tiny/real_photos_critique_k3500",
              "tiny/real_photos_efficientnet"}


def _params(budget: str):
    return [pytest.param(name, marks=[pytest.mark.slow] if budget == "full" or name in HEAVY_TINY else [], id=name)
            for name, case in GOLDEN.items() if case["budget"] == budget]


def _check(name: str, tmp_path) -> None:
    case = GOLDEN[name]
    reason = missing_requirement(case)
    if reason:
        pytest.skip(reason)
    measured = golden_numbers(run_case(case, tmp_path))
    moved = differences(case["numbers"], measured)
    assert not moved, f"{name} moved:\n" + "\n".join(moved)


@pytest.mark.parametrize("name", _params("tiny"))
def test_tiny_budget_numbers_unchanged(name, tmp_path):
    _check(name, tmp_path)


@pytest.mark.parametrize("name", _params("full"))
def test_published_numbers_unchanged(name, tmp_path):
    _check(name, tmp_path)


def test_golden_file_covers_every_shipped_scene():
    from golden import cases

    assert set(cases()) <= set(GOLDEN) | {name for name, case in cases().items() if missing_requirement(case)}


def test_differences_reports_a_moved_number():
    assert differences({"ms": 0.309}, {"ms": 0.309}) == []
    assert differences({"ms": 0.309}, {"ms": 0.3091}) == ["ms: expected 0.309, measured 0.3091"]
    assert differences({"ms": None}, {}) == ["ms: expected None, no longer measured"]
