"""The verdict table's rows exactly as a reader sees them (simulator.stages.verdict).

tests/test_science_closed_forms.py checks each reading against its line; this file checks the
rest of every row: all five cells of each measurement row (the `measured` text rounded to 3
significant digits), the warning rows' full wording with the limits they quote
(MIN_MEASURED_POINTS, MAX_MAJORITY_SHARE, CHANCE_STANDARD_ERRORS), which split and class an
imbalance warning names, the chance line chance + 2 standard errors at a test-set size where it
is exact in binary, and how snapshots are paired with the attack report of their step. Every
input is built by hand; the file runs in well under a second.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from simulator.stages.verdict import (
    CHANCE_STANDARD_ERRORS,
    MAX_MAJORITY_SHARE,
    MIN_MEASURED_POINTS,
    WARNING,
    _majority,
    data_warnings,
    point_count_warnings,
    snapshot_verdicts,
    split_warnings,
    verdict_rows,
)

# The documented defaults of `measure.thresholds` (checked in test_science_closed_forms.py).
THRESHOLDS = {"clinging_fraction": 0.5, "tangent_ratio": 0.5, "tangent_along": 0.5, "stretch_alignment": 0.7,
              "specificity": 2.0}

# The wording of the warnings, with the limits they quote written out by hand.
FEW_POINTS_MEANING = (
    "too few points for stable medians (fewer than 20: the 95% interval of a median then spans more than the "
    "middle half of the values), so the readings below are anecdotes; raise measure.n_points (and data.n_test) "
    "to at least 20")
FEW_TRAINING_MEANING = ("the heights at training points (the dimple depth) rest on fewer than 20 points and the "
                        "network sees almost no data; raise data.n_train")
CHANCE_MEANING = (
    "the network predicts no better than a constant guess, so the geometry below is that of a boundary that "
    "separates nothing it generalises (expected only with random labels); train longer (train.steps, train.lr) "
    "or check the labels")


def imbalance_meaning(shown_share: str) -> str:
    return (f"a constant guess already scores {shown_share} and the few other points alone shape the boundary, "
            "so accuracy and the readings below say little; change the labels.* settings so that every class "
            "has at least 5% of the points")


def warning(check: str, measured: str, reading: str) -> dict:
    return {"measurement": WARNING, "dimpled": "", "stretchy": "", "measured": measured, "reading": reading,
            "check": check}


def test_the_limits_are_the_documented_ones():
    """The wording above quotes 20 points, 5% per class and 2 standard errors."""
    assert (MIN_MEASURED_POINTS, MAX_MAJORITY_SHARE, CHANCE_STANDARD_ERRORS) == (20, 0.95, 2.0)
    assert WARNING == "warning"


# --------------------------------------------------------------------------- measurement rows

# Every value has more than 3 significant digits, so each `measured` cell shows the rounding.
FULL_SUMMARY = {
    "step": 100,
    "test_accuracy": 0.97,
    "height": {"clinging_fraction": 0.61234, "clinging_epsilon": 0.051234, "dimple_depth": 0.0123456},
    "tangent": {"n_points": 50, "ratio_to_baseline": 0.41234, "rms_tau": 0.0658591, "baseline_rms_tau": 0.1597191},
    "stretch": {"normal_energy_share": 0.87654, "normal_energy_baseline": 0.66667},
}
FULL_ATTACKS = {
    "manifold_specificity": 2.34567, "manifold_specificity_interval": [1.87654, 3.14159],
    "stretch_alignment": {"mean_alignment": 0.76543, "random_baseline": 0.123456},
    "modes": {"free": {"n_points": 50}, "on": {"n_points": 50}},
}
FULL_TABLE = [
    {"measurement": "clinging fraction", "dimpled": ">= 0.5", "stretchy": "no prediction",
     "measured": "0.612 (eps = 0.0512)", "reading": "clings (dimpled)"},
    {"measurement": "dimple depth", "dimpled": "> 0, shallow", "stretchy": "no prediction",
     "measured": "0.0123", "reading": "deeper at data (dimples)"},
    {"measurement": "RMS tau / sqrt(k/n)", "dimpled": "<= 0.5", "stretchy": "~1",
     "measured": "0.412 (tau 0.0659, random 0.16)", "reading": "perpendicular (dimpled)"},
    {"measurement": "manifold specificity MS", "dimpled": ">= 2", "stretchy": "0.5 to 2",
     "measured": "2.35 [1.88, 3.14]", "reading": "manifold specially robust (dimpled)"},
    {"measurement": "free attack along v_1", "dimpled": "no prediction", "stretchy": ">= 0.7",
     "measured": "0.765 (random 0.123)", "reading": "pushes the most stretched feature (stretchy)"},
    {"measurement": "off-manifold feature energy", "dimpled": "> (n-k)/n", "stretchy": "either",
     "measured": "0.877 (isotropic 0.667)", "reading": "above baseline"},
]


def test_a_full_verdict_shows_every_cell_rounded_to_three_digits():
    assert verdict_rows(FULL_SUMMARY, THRESHOLDS, FULL_ATTACKS) == FULL_TABLE


def test_a_dimple_depth_without_a_boundary_and_an_ms_without_an_interval():
    """No boundary within t_max: the depth shows n/a. An MS median without a bootstrap interval
    shows the median alone, rounded to 3 digits."""
    summary = {"height": {"clinging_fraction": 0.0, "clinging_epsilon": 0.123456, "dimple_depth": None}}
    rows = verdict_rows(summary, THRESHOLDS, {"manifold_specificity": 1.23456, "manifold_specificity_interval": None})
    assert rows == [
        {"measurement": "clinging fraction", "dimpled": ">= 0.5", "stretchy": "no prediction",
         "measured": "0 (eps = 0.123)", "reading": "does not cling (against dimpled)"},
        {"measurement": "dimple depth", "dimpled": "> 0, shallow", "stretchy": "no prediction",
         "measured": "n/a", "reading": "n/a: no boundary within t_max"},
        {"measurement": "RMS tau / sqrt(k/n)", "dimpled": "<= 0.5", "stretchy": "~1",
         "measured": "no manifold estimate", "reading": "n/a"},
        {"measurement": "manifold specificity MS", "dimpled": ">= 2", "stretchy": "0.5 to 2",
         "measured": "1.23", "reading": "dimension effect only (critique)"},
    ]


@pytest.mark.parametrize("covering, measured, reading", [
    ([2.34567, None], ">= 2.35 (certified bracket; a median not found)", "manifold specially robust (dimpled)"),
    ([0.0, 0.456789], "<= 0.457 (certified bracket; a median not found)", "manifold directions are the weak ones"),
    ([0.87654, 1.23456], "undefined (a distance not found; bracket [0.877, 1.23])", "n/a"),
    ([0.87654, None], "undefined (a distance not found; bracket [0.877, inf])", "n/a"),
])
def test_an_ms_from_the_certified_bracket_shows_its_ends_to_three_digits(covering, measured, reading):
    """No MS median: the row shows the end of the covering interval that decides the reading,
    or both ends (an open upper end as inf) when neither does."""
    rows = verdict_rows({}, THRESHOLDS, {"manifold_specificity": None, "manifold_specificity_covering": covering})
    assert rows[-1] == {"measurement": "manifold specificity MS",
                        "dimpled": ">= 2", "stretchy": "0.5 to 2", "measured": measured, "reading": reading}


def test_a_tangent_ratio_line_of_exactly_one_has_no_towards_band():
    """With tangent_ratio = 1 the symmetric 'towards' line 1/1 would coincide with the
    'perpendicular' line: a ratio of 1.2 short of the 'along' line (RMS tau^2 = 0.36 < k/n +
    0.5 (1 - k/n) = 0.625 at k/n = 1/4) reads like a random direction."""
    thresholds = {**THRESHOLDS, "tangent_ratio": 1.0}
    summary = {"tangent": {"ratio_to_baseline": 1.2, "rms_tau": 0.6, "baseline_rms_tau": 0.5}}
    assert verdict_rows(summary, thresholds)[0] == {
        "measurement": "RMS tau / sqrt(k/n)", "dimpled": "<= 1", "stretchy": "~1",
        "measured": "1.2 (tau 0.6, random 0.5)", "reading": "like a random direction"}


def test_feature_energy_with_an_undefined_isotropic_share_is_undefined():
    """A finite share against a NaN baseline (stored as null) cannot be compared."""
    for baseline in (math.nan, None):
        summary = {"stretch": {"normal_energy_share": 0.9, "normal_energy_baseline": baseline}}
        assert verdict_rows(summary, THRESHOLDS)[-1] == {
            "measurement": "off-manifold feature energy", "dimpled": "> (n-k)/n", "stretchy": "either",
            "measured": "0.9 (isotropic n/a)", "reading": "undefined (no feature energy)"}


# --------------------------------------------------------------------------- point-count warnings


def test_few_points_name_each_measurement_and_its_count():
    """The tangent fraction's count, then the smallest attack mode's (modes without a count are
    left out); 'point' is singular for exactly one."""
    summary = {"tangent": {"n_points": MIN_MEASURED_POINTS - 1}}
    attacks = {"modes": {"free": {"n_points": 25}, "on": {"n_points": 1}, "off": {}, "random": {"n_points": None}}}
    assert point_count_warnings(summary, attacks) == [
        warning("few_points", "tangent fraction over 19 points, attacks over 1 point", FEW_POINTS_MEANING)]


@pytest.mark.parametrize("summary, attacks, finding", [
    ({"tangent": {"n_points": 2}}, None, "tangent fraction over 2 points"),
    ({"tangent": {"n_points": 0}}, {"modes": {"free": {"n_points": 20}}}, "tangent fraction over 0 points"),
    ({}, {"modes": {"free": {"n_points": 7}, "on": {"n_points": 3}}}, "attacks over 3 points"),
    ({"tangent": None}, {"modes": {"free": {"n_points": 0}}}, "attacks over 0 points"),
    ({"tangent": {"n_points": 20}}, {"modes": {"free": {"n_points": 19}}}, "attacks over 19 points"),
])
def test_few_points_from_either_count_alone(summary, attacks, finding):
    assert point_count_warnings(summary, attacks) == [warning("few_points", finding, FEW_POINTS_MEANING)]


@pytest.mark.parametrize("summary, attacks", [
    ({"tangent": {"n_points": MIN_MEASURED_POINTS}}, {"modes": {"free": {"n_points": MIN_MEASURED_POINTS}}}),
    ({"tangent": {"n_points": None}}, {"modes": {"free": {"n_points": None}}}),  # runs before counts were kept
    ({}, {"modes": None}),
    ({}, {}),
    ({}, None),
])
def test_no_point_warning_at_the_limit_or_without_counts(summary, attacks):
    assert point_count_warnings(summary, attacks) == []


# --------------------------------------------------------------------------- warnings from the labels


def labels(train: list[int], test: list[int], n_classes: int = 2) -> SimpleNamespace:
    """A stand-in `Dataset`: train[c] (test[c]) points of class c."""
    return SimpleNamespace(n_classes=n_classes, y_train=np.repeat(np.arange(len(train)), train),
                           y_test=np.repeat(np.arange(len(test)), test))


def test_few_training_points_warn_below_twenty_only():
    assert data_warnings(labels([10, 9], [50, 50]), None) == [
        warning("few_training_points", "19 training points", FEW_TRAINING_MEANING)]
    assert data_warnings(labels([10, 10], [50, 50]), None) == []


def test_class_imbalance_warns_strictly_above_95_percent():
    """95 of 100 (exactly MAX_MAJORITY_SHARE in floating point) passes; 96 of 100 warns, naming
    the class, the share and the split."""
    assert 95 / 100 == MAX_MAJORITY_SHARE
    assert data_warnings(labels([95, 5], [50, 50]), None) == []
    assert data_warnings(labels([50, 50], [5, 95]), None) == []
    assert data_warnings(labels([96, 4], [40, 60]), None) == [
        warning("class_imbalance", "class 0 holds 96.0% of the training points", imbalance_meaning("96.0%"))]


def test_class_imbalance_names_the_more_lopsided_split_and_the_first_on_a_tie():
    """The test split's 97% beats the training split's 96%; equal shares name the training
    split (and its majority class, here a different one)."""
    assert data_warnings(labels([4, 96], [3, 0, 197], n_classes=3), None) == [
        warning("class_imbalance", "class 2 holds 98.5% of the test points", imbalance_meaning("98.5%"))]
    assert data_warnings(labels([96, 4], [4, 96]), None) == [
        warning("class_imbalance", "class 0 holds 96.0% of the training points", imbalance_meaning("96.0%"))]


# 32 + 32 test points: chance 1/2, standard error sqrt(1/4 / 64) = 1/16, so the chance line is
# 1/2 + 2/16 = 0.625 exactly.
BALANCED = labels([50, 50], [32, 32])
CHANCE_LINE = 0.625


def test_chance_line_is_exact_at_64_balanced_test_points():
    assert 0.5 + CHANCE_STANDARD_ERRORS * math.sqrt(0.5 * 0.5 / 64) == CHANCE_LINE


@pytest.mark.parametrize("accuracy, shown", [(CHANCE_LINE - 2**-20, "62.5%"), (0.5, "50.0%"), (0.4, "40.0%")])
def test_accuracy_below_the_chance_line_warns(accuracy, shown):
    assert data_warnings(BALANCED, accuracy) == [warning(
        "chance_accuracy", f"test accuracy {shown}, chance 50.0% (the majority class's share of 64 test points)",
        CHANCE_MEANING)]


@pytest.mark.parametrize("accuracy", [CHANCE_LINE, 0.7, 1.0, None, math.nan])
def test_accuracy_at_or_above_the_chance_line_or_unknown_does_not_warn(accuracy):
    assert data_warnings(BALANCED, accuracy) == []


def test_an_imbalanced_test_set_raises_the_chance_line_to_its_majority_share():
    """970 of 1000 test points in class 1: a constant guess scores 97%, standard error
    sqrt(0.97 * 0.03 / 1000) = 0.0054, chance line 0.9808: 98% accuracy is still at chance,
    99% is not. The imbalance warning comes first."""
    data = labels([50, 50], [30, 970])
    imbalance = warning("class_imbalance", "class 1 holds 97.0% of the test points", imbalance_meaning("97.0%"))
    assert data_warnings(data, 0.98) == [imbalance, warning(
        "chance_accuracy", "test accuracy 98.0%, chance 97.0% (the majority class's share of 1000 test points)",
        CHANCE_MEANING)]
    assert data_warnings(data, 0.99) == [imbalance]


def test_all_three_label_warnings_in_their_order():
    data = labels([18, 1], [1, 99])
    assert data_warnings(data, 0.5) == [
        warning("few_training_points", "19 training points", FEW_TRAINING_MEANING),
        warning("class_imbalance", "class 1 holds 99.0% of the test points", imbalance_meaning("99.0%")),
        warning("chance_accuracy",
                "test accuracy 50.0%, chance 99.0% (the majority class's share of 100 test points)", CHANCE_MEANING),
    ]


@pytest.mark.parametrize("given, expected", [
    ([0, 2, 2, 1], (0.5, 2)),
    ([1], (1.0, 1)),
    ([1, 0], (0.5, 0)),  # a tie goes to the lowest class
    (np.array([0.0, 1.0, 1.0]), (2 / 3, 1)),  # integer-valued labels of any dtype
    ([], (0.0, 0)),  # no labels: no class holds anything
])
def test_majority_share_and_class(given, expected):
    assert _majority(given, 3) == expected


# --------------------------------------------------------------------------- whole verdicts


def test_verdict_rows_append_point_and_label_warnings_after_the_measurements():
    """Attack modes over 3 points and test accuracy at chance (from the summary) add two warning
    rows after the measurement rows."""
    summary = {"test_accuracy": 0.5,
               "tangent": {"n_points": 50, "ratio_to_baseline": 1.0, "rms_tau": 0.5, "baseline_rms_tau": 0.5}}
    attacks = {"manifold_specificity": 1.0, "modes": {"free": {"n_points": 3}}}
    rows = verdict_rows(summary, THRESHOLDS, attacks, data=BALANCED)
    measurements = [
        {"measurement": "RMS tau / sqrt(k/n)", "dimpled": "<= 0.5", "stretchy": "~1",
         "measured": "1 (tau 0.5, random 0.5)", "reading": "like a random direction"},
        {"measurement": "manifold specificity MS", "dimpled": ">= 2", "stretchy": "0.5 to 2",
         "measured": "1", "reading": "dimension effect only (critique)"},
    ]
    warnings = [
        warning("few_points", "attacks over 3 points", FEW_POINTS_MEANING),
        warning("chance_accuracy",
                "test accuracy 50.0%, chance 50.0% (the majority class's share of 64 test points)", CHANCE_MEANING),
    ]
    assert rows == measurements + warnings
    assert split_warnings(rows) == (warnings, measurements)
    assert verdict_rows(summary, THRESHOLDS, attacks) == measurements + warnings[:1]  # no labels, no label warnings


def test_split_warnings_keeps_the_stored_order_of_each_kind():
    rows = [{"measurement": "a"}, warning("x", "1", "one"), {"measurement": "b"}, warning("y", "2", "two")]
    assert split_warnings(rows) == ([rows[1], rows[3]], [rows[0], rows[2]])
    assert split_warnings([]) == ([], [])


def test_snapshot_verdicts_pair_each_snapshot_with_the_attacks_of_its_step():
    """Step 10 was not attacked (and is at chance); step 20 was; the report of step 30 has no
    snapshot and is not used."""
    tangent = {"n_points": 50, "ratio_to_baseline": 0.25, "rms_tau": 0.125, "baseline_rms_tau": 0.5}
    snapshots = [{"step": 10, "test_accuracy": 0.5, "tangent": tangent},
                 {"step": 20, "test_accuracy": 0.75, "tangent": tangent}]
    reports = [{"step": 20, "manifold_specificity": 2.5, "modes": {"free": {"n_points": 50}}},
               {"step": 30, "manifold_specificity": 0.25, "modes": {"free": {"n_points": 5}}}]
    tangent_row = {"measurement": "RMS tau / sqrt(k/n)", "dimpled": "<= 0.5", "stretchy": "~1",
                   "measured": "0.25 (tau 0.125, random 0.5)", "reading": "perpendicular (dimpled)"}
    ms = {"measurement": "manifold specificity MS", "dimpled": ">= 2", "stretchy": "0.5 to 2"}
    at_chance = warning("chance_accuracy",
                        "test accuracy 50.0%, chance 50.0% (the majority class's share of 64 test points)",
                        CHANCE_MEANING)
    assert snapshot_verdicts(snapshots, THRESHOLDS, reports, data=BALANCED) == [
        [tangent_row, {**ms, "measured": "attacks not run", "reading": "n/a"}, at_chance],
        [tangent_row, {**ms, "measured": "2.5", "reading": "manifold specially robust (dimpled)"}],
    ]
    assert snapshot_verdicts(snapshots, THRESHOLDS) == [  # no attacks, no labels
        [tangent_row, {**ms, "measured": "attacks not run", "reading": "n/a"}]] * 2
    assert snapshot_verdicts([], THRESHOLDS, reports, data=BALANCED) == []
