"""Label rules against their closed-form definitions on chart coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.config.loading import scene_from_dict
from simulator.config.scene import RULE_NAMES
from simulator.labels import LABEL_RULES, make_label_rule

RNG = np.random.default_rng(0)


def rule_for(labels: dict, manifold: dict | None = None):
    scene = scene_from_dict({"manifold": manifold or {"family": "flat", "dim": 2, "ambient_dim": 3},
                             "labels": labels})
    built = scene.manifold.build()
    return make_label_rule(scene.labels, built, np.random.default_rng(1)), built


def test_half_space_splits_along_its_direction():
    rule, _ = rule_for({"rule": "half_space", "direction": [1.0, 1.0], "offset": 0.1})
    u, y = rule.sample(2000, RNG)
    np.testing.assert_array_equal(y, ((u[:, 0] + u[:, 1]) / np.sqrt(2) > 0.1).astype(int))


def test_stripes_cycle_through_classes():
    rule, _ = rule_for({"rule": "stripes", "n_stripes": 6, "axis": 1, "n_classes": 3})
    u, y = rule.sample(2000, RNG)
    stripe = np.clip(np.floor((u[:, 1] + 1) / (2 / 6)), 0, 5)
    np.testing.assert_array_equal(y, stripe % 3)
    assert set(y) == {0, 1, 2}


def test_checkerboard_parity():
    rule, _ = rule_for({"rule": "checkerboard", "cells_per_axis": 4})
    u, y = rule.sample(2000, RNG)
    cells = np.clip(np.floor((u + 1) / 0.5), 0, 3)
    np.testing.assert_array_equal(y, cells.sum(axis=1) % 2)
    assert 0.4 < y.mean() < 0.6  # uniform sampling: balanced classes


def test_component_labels_follow_the_sphere_radius():
    rule, manifold = rule_for({"rule": "component"},
                              {"family": "concentric_spheres", "dim": 2, "ambient_dim": 3,
                               "inner_radius": 1.0, "outer_radius": 1.5})
    u, y = rule.sample(1000, RNG)
    radius = np.linalg.norm(manifold.immersion(u), axis=1)
    np.testing.assert_array_equal(y, (radius > 1.25).astype(int))


def test_random_labels_are_balanced_and_have_no_map():
    rule, _ = rule_for({"rule": "random", "n_classes": 4})
    _, y = rule.sample(4000, RNG)
    assert np.all(np.abs(np.bincount(y) / 4000 - 0.25) < 0.03)
    assert not rule.has_label_map
    with pytest.raises(ValueError):
        rule.label_of(np.zeros((1, 2)))


def test_clusters_random_layout_and_label_map():
    rule, _ = rule_for({"rule": "clusters", "n_clusters": 7, "layout": "random", "n_classes": 3})
    u, y = rule.sample(3000, RNG)
    assert set(y) == {0, 1, 2}
    # points are drawn around their own blob, so the nearest-centre map mostly agrees
    assert np.mean(rule.label_of(u) == y) > 0.8
    assert np.all((u >= -1) & (u <= 1))  # blobs are kept inside the chart box


# --------------------------------------------------------------------------- every rule


def test_registry_keys_are_the_schema_rules():
    assert set(LABEL_RULES) == set(RULE_NAMES)
    for name, cls in LABEL_RULES.items():
        assert cls.rule == name


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_every_rule_builds_from_its_defaults_and_labels_consistently(rule):
    manifold = {"family": "concentric_spheres"} if rule == "component" else None
    built_rule, manifold = rule_for({"rule": rule}, manifold)
    assert type(built_rule) is LABEL_RULES[rule]
    u, y = built_rule.sample(400, np.random.default_rng(2))
    assert u.shape == (400, manifold.dim) and y.shape == (400,)
    assert set(np.unique(y)) <= set(range(built_rule.n_classes))
    if built_rule.has_label_map and rule != "clusters":  # blobs overlap, so a blob's class is not its map's
        np.testing.assert_array_equal(built_rule.label_of(u), y)
