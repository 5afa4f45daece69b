"""Fuzzing experiment files: whatever a file holds, validation either accepts it (and the memory
check then passes or refuses it with a SceneError) or refuses it with a SceneError; never
another exception, never slowly.

The files are mutations of the shipped scenes and real-image experiments (scenes/*.yaml): fields
set to values of the wrong type, huge, negative, NaN or infinite numbers, unknown keys, deleted
keys, raw YAML oddities (1:30, 010, yes, tags, merge keys, aliases, deep brackets), plus whole
documents of random text or bytes. Hypothesis runs derandomised, so CI sees the same files.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from click.testing import CliRunner
from conftest import SCENES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import cli
from simulator.config.loading import parse_yaml
from simulator.config.real import RealExperiment
from simulator.config.resources import check_memory
from simulator.config.scene import LABEL_SPECS, MANIFOLD_SPECS, Scene
from simulator.errors import SceneError
from simulator.pipeline import load_experiment

FILES_PER_RUN = 1000  # the floor on fuzzed files per test run
CASE_SECONDS = 2.0  # per file: reading, validating and the memory estimate
FUZZ = settings(max_examples=1100, deadline=CASE_SECONDS * 1000, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

SHIPPED = {path.name: parse_yaml(path.read_text()) for path in sorted(SCENES.glob("*.yaml"))}

# Raw YAML put in place of a value: each a form that YAML 1.1 reads differently, a tag, an
# alias, an absurd number or nesting.
ODD_SCALARS = [
    "1:30", "-1:30:00", "190:20:30.15", "010", "-017", "0x1F", "0o17", "0b101", "1_000", "1_000.5", "0.", ".5",
    "+.inf", "-.inf", ".inf", ".nan", ".NaN", "1e999", "-1e999", "1e-999", "9" * 150, "-" + "9" * 120,
    str(2**63), str(2**64), str(-(2**63)), "1e308", "4.9e-324", "yes", "No", "on", "OFF", "y", "n", "~", "null",
    "NULL", "", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "=", "<<", "!!binary aGVsbG8=", "!!int 010",
    "!!int 0x1F", "!!float 1e3", "!!float .inf", "!!bool yes", "!!str 5", "!!null ''", "!!timestamp 2024-01-01",
    "!!set {a, b}", "!!omap [a: 1]", "!!python/object/apply:os.system [echo]", "!!python/name:os.system",
    "!custom x", "*undefined", "&lonely 5", "[" * 40 + "]" * 40, "{a: {b: {c: {d: 1}}}}", "[1, [2, [3, [4]]]]",
    "'1:30'", '"010"', '"\\x00"', '"\\uffff"', "{? [1, 2] : 3}", "[a, b, c, a, b, c]", "{<<: {a: 1}}", "{a: 1, a: 2}",
]
# Whole documents that are not mutations of a scene.
ODD_DOCUMENTS = [
    "", "---", "...", "- 1\n- 2", "just text", "a: 1\n---\nb: 2", "\t", "\ufeffmanifold: {family: flat}",
    "manifold: {family: flat}\nlabels: {rule: random}\n" + "x" * 300_000, "%YAML 1.1\n---\nseed: 010",
    "%TAG !e! tag:example.com,2000:\n---\nseed: !e!x 5", "? complex\n: key", "&a [*a]", "a: &a {b: *a}",
    "a: &a [1]\nb: &b [*a, *a]\nc: &c [*b, *b]\n" * 3, "\x00", "{" * 3000, "[" * 3000 + "]" * 3000,
]


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field of `model` (sections and leaves), through nested models and tagged unions."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        for member in _models_in(field.annotation):
            paths += field_paths(member, f"{prefix}{name}.")
    return sorted(set(paths))


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for member in getattr(annotation, "__args__", ()) for model in _models_in(member)]


PATHS = sorted(set(field_paths(Scene) + field_paths(RealExperiment)
                   + [f"manifold.{p}" for spec in MANIFOLD_SPECS for p in field_paths(spec)]
                   + [f"labels.{p}" for spec in LABEL_SPECS for p in field_paths(spec)]
                   + ["kind", "unknown_key", "train.unknown", "measure.attacks.typo", "a.b.c.d"]))

huge_integers = st.one_of(st.integers(), st.integers(-(2**80), 2**80),
                          st.sampled_from([0, -1, 1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 10**15, 10**30, -(10**18)]))
numbers = st.one_of(huge_integers, st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -0.0, 5e-324]))
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=20),
                    st.sampled_from(["free", "on", "off", "flat", "clusters", "adam", "real", "cpu", "cuda"]))
# Values of the right type near the edges of (or just past) the limits: these mostly validate
# and reach the memory check.
plausible_integers = st.one_of(st.integers(0, 10), st.integers(-2, 10**8),
                               st.sampled_from([2**16, 2**20, 4096, 10**6, 10**7, 10**7 + 1, 10_000, 10_001]))
plausible_floats = st.one_of(st.floats(1e-12, 1e13), st.floats(-1e7, 1e7), st.sampled_from([1e-9, 1e6, 1e12]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(PATHS), inner, max_size=3),
                      max_leaves=12)


@st.composite
def documents(draw) -> tuple[str, str | bytes]:
    """(how it was made, the file's contents)."""
    kind = draw(st.sampled_from(["mutation"] * 6 + ["odd document", "random text", "random bytes"]))
    if kind == "odd document":
        return kind, draw(st.sampled_from(ODD_DOCUMENTS))
    if kind == "random text":
        return kind, draw(st.text(max_size=300))
    if kind == "random bytes":
        return kind, draw(st.binary(max_size=300))
    return kind, draw(mutated_scenes())


@st.composite
def mutated_scenes(draw) -> str:
    """A shipped scene or experiment with 1-4 fields set, deleted or replaced by raw YAML."""
    raw = _copy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    odd: list[str] = []  # raw YAML texts, put where the placeholders __ODD_i__ are
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS) | st.sampled_from(sorted(_leaf_paths(raw))))
        action = draw(st.sampled_from(["plausible", "plausible", "value", "value", "odd", "odd", "alias", "delete"]))
        if action == "plausible":
            _set_plausible(raw, draw(st.sampled_from(sorted(_leaf_paths(raw)))), draw)
        elif action == "delete":
            _delete(raw, path)
        elif action == "value":
            _set(raw, path, draw(values))
        elif action == "odd":
            _set(raw, path, f"__ODD_{len(odd)}__")
            odd.append(draw(st.sampled_from(ODD_SCALARS)))
        else:  # an anchored value, then aliases of it elsewhere
            _set(raw, path, f"__ODD_{len(odd)}__")
            odd.append(f"&shared {draw(st.sampled_from(['[64, 64]', '5', '{a: 1}', '[[1, 2], [3, 4]]']))}")
            for other in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3)):
                _set(raw, other, f"__ODD_{len(odd)}__")
                odd.append("*shared")
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=draw(st.sampled_from([False, None, True])),
                          allow_unicode=True)
    for index, replacement in enumerate(odd):
        text = text.replace(f"__ODD_{index}__", replacement, 1)
    return text


def _set_plausible(raw: dict, path: str, draw) -> None:
    """Give an existing number a value of its own type, large or small (other values stay)."""
    current = _get(raw, path)
    if isinstance(current, bool) or not isinstance(current, (int, float, list)):
        return
    if isinstance(current, list):
        value = draw(st.lists(plausible_integers, min_size=1, max_size=4)) if all(
            isinstance(item, int) for item in current) else current
    else:
        value = draw(plausible_integers if isinstance(current, int) else plausible_floats)
    _set(raw, path, value)


def _get(raw: dict, path: str):
    for key in path.split("."):
        raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def _copy(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else \
        [_copy(v) for v in value] if isinstance(value, list) else value


def _leaf_paths(raw, prefix: str = "") -> list[str]:
    paths = []
    for key, value in raw.items():
        paths.append(prefix + str(key))
        if isinstance(value, dict):
            paths += _leaf_paths(value, f"{prefix}{key}.")
    return paths


def _set(raw: dict, path: str, value) -> None:
    *sections, last = path.split(".")
    for key in sections:
        if not isinstance(raw.get(key), dict):
            raw[key] = {}
        raw = raw[key]
    raw[last] = value


def _delete(raw: dict, path: str) -> None:
    *sections, last = path.split(".")
    for key in sections:
        raw = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(raw, dict):
        raw.pop(last, None)


def validate_file(path: Path) -> str:
    """'valid', 'refused' or 'refused (memory)'; any other exception fails the test."""
    try:
        config = load_experiment(path)
    except SceneError:
        return "refused"
    try:
        check_memory(config)
    except SceneError:
        return "refused (memory)"
    return "valid"


def _write(folder: Path, contents: str | bytes) -> Path:
    path = folder / "fuzzed.yaml"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents, encoding="utf-8", errors="surrogatepass")
    return path


def test_fuzzed_files_validate_or_are_refused_cleanly(capsys):
    counts: Counter = Counter()
    slowest = [0.0]
    with tempfile.TemporaryDirectory() as folder:

        @FUZZ
        @given(document=documents())
        def check(document):
            kind, contents = document
            started = time.perf_counter()
            counts[validate_file(_write(Path(folder), contents))] += 1
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            counts[kind] += 1

        check()
    outcomes = counts["valid"] + counts["refused"] + counts["refused (memory)"]
    with capsys.disabled():
        print(f"\nfuzzed {outcomes} files ({counts['mutation']} mutated scenes/experiments, {counts['odd document']} "
              f"odd documents, {counts['random text']} random texts, {counts['random bytes']} random bytes): "
              f"{counts['valid']} valid, {counts['refused']} refused by validation, {counts['refused (memory)']} "
              f"refused by the memory check; slowest {slowest[0]:.3f} s")
    assert outcomes >= FILES_PER_RUN
    assert counts["valid"] > 0 and counts["refused"] > 0  # the mutations reach both sides


def test_fuzzed_files_through_sim_scenes_validate():
    """A few dozen of the same kind of files through the CLI: exit 0 or 2, never a traceback."""
    runner = CliRunner()
    exits: Counter = Counter()
    with tempfile.TemporaryDirectory() as folder:

        @settings(FUZZ, max_examples=40)
        @given(document=documents())
        def check(document):
            result = runner.invoke(cli.main, ["scenes", "validate", str(_write(Path(folder), document[1]))])
            assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
            assert "Traceback" not in result.output
            assert result.exit_code == 0 or "invalid:" in result.output
            exits[result.exit_code] += 1

        check()
    assert sum(exits.values()) >= 40 and exits[2] > 0


def test_fuzzed_set_overrides_never_start_a_run():
    """`sim run --set KEY=ODD --max-memory 1`: refused by validation or by the 1-byte memory limit,
    so nothing is ever trained or written."""
    runner = CliRunner()
    generator = random.Random(12)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "renders"
        for _ in range(30):
            path, odd = generator.choice(PATHS), generator.choice(ODD_SCALARS)
            result = runner.invoke(cli.main, ["run", str(SCENES / "sheet_two_class.yaml"), "--out", str(out),
                                              "--max-memory", "1", "--set", f"{path}={odd}"])
            assert result.exit_code == 2, (path, odd, result.output, result.exception)
            assert "Traceback" not in result.output
        assert not out.exists()
