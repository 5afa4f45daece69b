"""The run report: `report.md` and `report.html` in a run directory.

    from simulator.report.run_report import write_report
    md_path, html_path = write_report("renders/sheet_two_class")

The report puts together what a run produced: the scene (summary and the full resolved YAML),
the verdict table with what each row means, the attack table in the paper's layout with the
manifold specificity MS and its interval, the geometry of the final snapshot, the figures, the
3-D renders, the training animation and an interactive 3-D view of the final decision boundary
(plotly WebGL, with the manifold and the data points). Whatever a run lacks (no measurements,
no attacks, no 3-D files) is said in its section; the report is written anyway.

`report.html` is one self-contained file: images are embedded as data URIs and plotly.js is
inline, so it opens offline and can be mailed around. `report.md` links the files beside it; the
scene's own text in it (name, description, settings) is escaped (`simulator.report.markdown`).
Both hold no wall-clock time (those are in timings.json), so two runs of one scene on one
machine write byte-identical reports.

The per-run pieces (`find_artifacts`, `scene_rows`, `geometry_rows`, `attack_rows`,
`verdict_html`, `attack_html`, `interactive_view_html`) are public so that other pages (the
real-image report, `sim compare`) show runs the same way; the page itself is built from the
HTML kit in `simulator.report.html`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.formatting import fmt, percent
from simulator.render.interactive import (
    MeshLayer,
    PointLayer,
    camera_eye,
    frame_of_mesh,
    interactive_mesh_html,
)
from simulator.render.palette import MANIFOLD_COLOUR
from simulator.report.attack_tables import ATTACK_COLUMNS, TABLE_NOTE, attack_markdown, attack_rows, specificity_text
from simulator.report.html import (
    Section,
    code_html,
    details_html,
    escape,
    figure_html,
    html_page,
    html_table,
    md_table,
    not_measured_html,
)
from simulator.report.markdown import markdown_code_block, markdown_link, markdown_text
from simulator.report.seed_agreement_tables import agreement_rows
from simulator.report.verdict_tables import (
    ROW_EXPLANATIONS,
    verdict_markdown,
    warning_text,
)
from simulator.runs.io import write_text
from simulator.runs.loading import Run, load_run
from simulator.stages.verdict import split_warnings

__all__ = [
    "FIGURES", "RunArtifacts", "attack_html", "attack_rows", "build_report", "find_artifacts", "geometry_rows",
    "interactive_view_html", "relabel_reading", "scene_rows", "verdict_html", "write_report",
]

# The 2-D figures a run may hold, in report order, with what each shows.
FIGURES = {
    "cross_section.png": "Cross-sections through a training point (one tangent direction x the normal) at the "
                         "first, middle and last snapshot: the decision boundary's profile around the data.",
    "height_map.png": "Height h(u) of the decision boundary above the manifold over the chart, with the "
                      "training points: where the boundary clings and where it dents.",
    "geometry_curves.png": "Geometry measurements over training: tangent fraction, clinging, heights, stretch.",
    "attack_norms.png": "Minimal adversarial L2 distances per attack mode (distribution over attacked points).",
}

# Figures that an experiment's own section shows (kept out of the general Figures section).
SECTION_FIGURES = {"seed_boundaries.png", "relabel.png"}  # shown in their own sections


# --------------------------------------------------------------------------- what a run directory holds


@dataclass
class RunArtifacts:
    """Files of a run directory the report shows (whatever exists; None / [] otherwise)."""

    figures: list[Path] = field(default_factory=list)  # known 2-D figures, in FIGURES order
    renders: list[Path] = field(default_factory=list)  # 3-D PNG renders, by step
    other_images: list[Path] = field(default_factory=list)  # any other PNG
    boundary_mesh: Path | None = None  # the boundary .vtp with the highest step
    boundary_step: int | None = None
    manifold_mesh: Path | None = None
    meshes: list[Path] = field(default_factory=list)  # every .vtp
    animations: list[Path] = field(default_factory=list)  # GIFs
    videos: list[Path] = field(default_factory=list)  # MP4s


def _step_of(path: Path) -> int:
    found = re.findall(r"step[_-]?(\d+)", path.stem)
    return int(found[-1]) if found else -1


def _is_render(path: Path) -> bool:
    name = path.stem.lower()
    return "render" in name or "3d" in name or name.startswith("boundary") or name.startswith("frame")


def find_artifacts(run_dir: str | Path) -> RunArtifacts:
    """Glob the run directory for figures, 3-D renders, meshes and animations."""
    run_dir = Path(run_dir)
    found = RunArtifacts()
    pngs = sorted(p for p in run_dir.glob("*.png") if not p.name.startswith("."))
    found.figures = [run_dir / name for name in FIGURES if (run_dir / name).is_file()]
    found.renders = sorted((p for p in pngs if p.name not in FIGURES and _is_render(p)),
                           key=lambda p: (_step_of(p), p.name))
    found.other_images = [p for p in pngs if p.name not in FIGURES and p not in found.renders
                          and p.name not in SECTION_FIGURES]
    found.meshes = sorted(p for p in run_dir.glob("*.vtp") if not p.name.startswith("."))
    boundaries = [p for p in found.meshes if "boundary" in p.name.lower() and not p.name.startswith("seed_")]
    if boundaries:
        found.boundary_mesh = max(boundaries, key=lambda p: (_step_of(p), p.name))
        step = _step_of(found.boundary_mesh)
        found.boundary_step = step if step >= 0 else None
    manifolds = [p for p in found.meshes if "manifold" in p.name.lower()]
    if manifolds:
        found.manifold_mesh = max(manifolds, key=lambda p: (_step_of(p), p.name))
    found.animations = sorted(p for p in run_dir.glob("*.gif") if not p.name.startswith("."))
    found.videos = sorted(p for p in run_dir.glob("*.mp4") if not p.name.startswith("."))
    return found


# --------------------------------------------------------------------------- per-run content


def scene_rows(run: Run) -> list[tuple[str, str]]:
    """(field, value) pairs summarising the scene and the training. No durations: they differ
    from run to run, and the report must not (timings.json has them)."""
    scene, metrics = run.scene, run.metrics
    training = metrics.get("training", {})
    final = training.get("final", {})
    manifold = scene.manifold
    labels = scene.labels.model_dump(mode="json")
    label_text = ", ".join(f"{key} {value}" for key, value in labels.items() if key != "rule" and value is not None)
    rows = [
        ("scene", scene.name + (f": {scene.description}" if scene.description else "")),
        ("manifold", f"{manifold.family}, k = {scene.manifold_dim()}, n = {manifold.ambient_dim}"
                     + (f", embedding {getattr(manifold, 'embedding', '')}" if getattr(manifold, "embedding", None)
                        else "")),
        ("labels", f"{labels.get('rule')} ({label_text})" if label_text else str(labels.get("rule"))),
        ("data", f"{scene.data.n_train} train, {scene.data.n_test} test points"
                 + (f", noise std {fmt(scene.data.noise_std)}" if getattr(scene.data, "noise_std", 0) else "")),
        ("model", f"MLP hidden {list(scene.model.hidden)}, {scene.model.activation}"),
        ("training", f"{training.get('steps', scene.train.steps)} steps of {scene.train.optimizer} "
                     f"(lr {fmt(scene.train.lr)}, batch {scene.train.batch_size}) on {metrics.get('device', '?')}"),
        ("final accuracy", f"train {percent(final.get('train_accuracy'))}, test {percent(final.get('test_accuracy'))} "
                           f"(loss {fmt(final.get('loss'))})"),
        ("snapshots", f"{len(metrics.get('snapshots', []))} ({scene.snapshots.schedule} schedule)"),
        ("seed", str(scene.seed)),
    ]
    geometry, attacks = metrics.get("geometry"), metrics.get("attacks")
    measured = []
    if geometry:
        measured.append(f"geometry on {geometry.get('device', '?')}")
    if attacks:
        measured.append(f"attacks on {attacks.get('device', '?')}")
    rows.append(("measurements", ", ".join(measured) if measured else "not measured"))
    return rows


def _verdict(run: Run) -> tuple[list[dict] | None, int | None]:
    """The final snapshot's stored verdict rows (warnings included) and step."""
    geometry = run.metrics.get("geometry")
    if not geometry or not geometry.get("snapshots"):
        return None, None
    final = geometry["snapshots"][-1]
    return final.get("verdict"), final.get("step")


def verdict_html(rows: list[dict]) -> str:
    """The warnings, then the verdict table with a column saying what each row measures."""
    warnings, rows = split_warnings(rows)
    notes = "".join(f'<p class="warning"><strong>Warning:</strong> {escape(warning_text(row))}</p>\n'
                    for row in warnings)
    table_rows = [{**row, "meaning": ROW_EXPLANATIONS.get(row["measurement"], "")} for row in rows]
    return notes + html_table(table_rows, ["measurement", "dimpled", "stretchy", "measured", "reading", "meaning"],
                              ["measurement", "dimpled predicts", "stretchy predicts", "measured", "reading",
                               "what it measures"])


def _robust_bracket(row: dict) -> str:
    if row.get("certified") is None:  # runs from before the brackets
        return percent(row["minimal_distance"])
    return f"[{percent(row['certified'])}, {percent(row['minimal_distance'])}]"


def _attack_extras(report: dict) -> list[str]:
    """Plain-text lines: the DeepFool check and the stretch alignment."""
    lines = []
    deepfool = report.get("deepfool_check")
    if deepfool:
        lines.append(f"DeepFool check of the free attack: median DeepFool distance {fmt(deepfool.get('median_distance'))}, "
                     f"median relative difference ours vs DeepFool "
                     f"{fmt(deepfool.get('median_relative_difference_pgd_vs_deepfool'), 3)}, "
                     f"share of our distances within 1% of DeepFool or shorter "
                     f"{percent(deepfool.get('share_pgd_within_1pct_or_shorter'))}.")
    alignment = report.get("stretch_alignment")
    if alignment:
        lines.append(f"Free attack direction vs the most stretched feature direction v_1: mean |cos| "
                     f"{fmt(alignment.get('mean_alignment'), 3)} (median {fmt(alignment.get('median_alignment'), 3)}, "
                     f"random direction {fmt(alignment.get('random_baseline'), 3)}).")
    features = (report.get("feature_alignment") or {}).get("features")
    if features:
        parts = ", ".join(f"{name} {fmt(value['mean_alignment'], 3)}" for name, value in features.items())
        lines.append(f"Free attack direction vs the scene's features (mean |cos|): {parts} (random direction "
                     f"{fmt(report['feature_alignment']['random_baseline'], 3)}).")
    robust = report.get("robust_accuracy")
    if robust:
        parts = ", ".join(f"eps {fmt(row['epsilon'], 3)}: {_robust_bracket(row)} "
                          f"(PGD-{robust['pgd_steps']} {percent(row['pgd'])})" for row in robust["epsilons"])
        lines.append(f"Robust accuracy at {robust['n_points']} attacked points (clean {percent(robust['clean'])}; "
                     f"[certified, minimal-distance attack], and a fixed-budget PGD in parentheses): {parts}.")
    return lines


def _attack_points(attacks: dict) -> int | None:
    final = attacks.get("final", {})
    modes = final.get("modes", {})
    if modes:
        return next(iter(modes.values())).get("n_points")
    return attacks.get("settings", {}).get("n_points")


def attack_html(attacks: dict) -> str:
    """Table, MS with interval, checks and settings for metrics["attacks"]."""
    final = attacks["final"]
    settings = attacks.get("settings", {})
    parts = [html_table(attack_rows(final), ATTACK_COLUMNS, numeric=ATTACK_COLUMNS[2:],
                        caption=f"Minimal adversarial L2 distances at {fmt(_attack_points(attacks))} test points, "
                                f"step {fmt(final.get('step'))}"),
             f'<p class="note">{escape(TABLE_NOTE)}</p>',
             f'<p class="ms"><strong>MS</strong> = {escape(specificity_text(final))}</p>',
             '<p class="note">MS = (d_on / d_off) / (d_rand_on / d_rand_off) from the medians of the verified '
             "distances. MS ~ 1: the on/off gap is a dimension effect (the critique); MS &gt;&gt; 1: the manifold "
             "is specially robust (the dimpled model); MS &lt; 1: manifold directions are the weak ones.</p>"]
    parts += [f"<p>{escape(line)}</p>" for line in _attack_extras(final)]
    if settings:
        parts.append(details_html("attack settings", html_table(sorted(settings.items()), ["setting", "value"])))
    return "\n".join(parts)


def geometry_rows(summary: dict) -> dict[str, list[tuple[str, Any]]]:
    """Grouped (quantity, value) pairs of one snapshot's geometry summary."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    tangent = summary.get("tangent")
    if tangent:
        groups["tangent fraction of the margin gradient"] = [
            ("points", tangent.get("n_points")),
            ("mean tau", tangent.get("mean_tau")),
            ("RMS tau", tangent.get("rms_tau")),
            ("random direction sqrt(k/n)", tangent.get("baseline_rms_tau")),
            ("RMS tau / sqrt(k/n)", tangent.get("ratio_to_baseline")),
            ("mean angle to the tangent space (deg)", tangent.get("mean_angle_deg")),
        ]
    height = summary.get("height")
    if height:
        groups["boundary height field h(u)"] = [
            ("chart points", f"{fmt(height.get('n_points'))} ({height.get('layout', '?')})"),
            ("search range t_max", height.get("t_max")),
            ("clinging epsilon", height.get("clinging_epsilon")),
            ("clinging fraction (|h| < eps)", height.get("clinging_fraction")),
            ("no boundary within t_max (fraction)", height.get("none_fraction")),
            ("median |h|", height.get("median_abs_h")),
            ("median |h| near data", height.get("median_abs_h_near_data")),
            ("median |h| far from data", height.get("median_abs_h_far_from_data")),
            ("median |h| at training points", height.get("median_abs_h_at_train_points")),
            ("dimple depth", height.get("dimple_depth")),
            ("near-data area fraction", height.get("near_data_fraction")),
            ("interface fraction", height.get("interface_fraction")),
        ]
    stretch = summary.get("stretch")
    if stretch:
        groups["stretch of the penultimate features"] = [
            ("points", stretch.get("n_points")),
            ("mean singular values", stretch.get("mean_singular_values")),
            ("median stretch ratio sigma_1 / sigma_min", stretch.get("median_stretch_ratio")),
            ("off-manifold energy share ||J P_N||^2 / ||J||^2", stretch.get("normal_energy_share")),
            ("isotropic share (n-k)/n", stretch.get("normal_energy_baseline")),
            ("tangent fraction of v_1", stretch.get("top_direction_tangent_fraction")),
            ("random direction sqrt(k/n)", stretch.get("top_direction_tangent_baseline")),
        ] + [(f"|<v_1, {name} direction>|", value)
             for name, value in (stretch.get("top_direction_feature_alignment") or {}).items()]
    return groups


# --------------------------------------------------------------------------- the interactive view


def interactive_view_html(run: Run, artifacts: RunArtifacts | None = None, div_id: str = "boundary-3d",
                          height: int = 620, max_faces: int = 40_000) -> str:
    """The rotatable 3-D view of the run's final boundary, the manifold mesh and the training points
    (n = 3: all of them; n > 3: those near the slice stored in the mesh's field data, projected).

    `div_id` must be unique on a page (several runs side by side). Raises FileNotFoundError when
    the run has no boundary mesh.
    """
    artifacts = artifacts or find_artifacts(run.path)
    if artifacts.boundary_mesh is None:
        raise FileNotFoundError("no boundary mesh (*boundary*.vtp) in the run directory")
    step = artifacts.boundary_step
    layers = [MeshLayer(f"decision boundary{f' (step {step})' if step is not None else ''}",
                        artifacts.boundary_mesh, max_faces=max_faces)]
    if artifacts.manifold_mesh is not None:
        layers.insert(0, MeshLayer("manifold", artifacts.manifold_mesh, color=MANIFOLD_COLOUR, opacity=0.45,
                                   max_faces=max_faces))
    points = None
    frame = frame_of_mesh(artifacts.boundary_mesh)
    if frame is not None and frame.ambient_dim == run.data.ambient_dim:
        coords, index, slab = frame.select(run.data.x_train)
        name = "train" if run.data.ambient_dim == 3 else f"train (within {fmt(slab, 2)} of the slice)"
        points = PointLayer(coords, run.data.y_train[index], name=name)
    elif run.data.ambient_dim == 3:  # no frame stored: for n = 3 frame coordinates are the data's own
        points = PointLayer(run.data.x_train, run.data.y_train, name="train")
    camera = run.scene.render.camera
    return interactive_mesh_html(layers, points, div_id=div_id, height=height,
                                 camera=camera_eye(camera.azimuth, camera.elevation, camera.zoom))


# --------------------------------------------------------------------------- the report


def _section_scene(run: Run) -> tuple[str, Section]:
    rows = scene_rows(run)
    scene_text = (run.path / "scene.yaml").read_text() if (run.path / "scene.yaml").is_file() else run.scene.to_yaml()
    md = ["## Scene", "", md_table(rows, ["field", "value"]).rstrip(), "",
          "<details><summary>Resolved scene (scene.yaml)</summary>", "", markdown_code_block(scene_text, "yaml"), "",
          "</details>", ""]
    body = html_table(rows, ["field", "value"]) + "\n" + details_html("resolved scene (scene.yaml)",
                                                                       code_html(scene_text))
    return "\n".join(md), Section("Scene", body)


def _section_verdict(run: Run) -> tuple[str, Section]:
    rows, step = _verdict(run)
    title = "Verdict" + (f" at step {step}" if step is not None else "")
    if not rows:
        text = "not measured: run `sim measure RUN_DIR` (and `sim attack RUN_DIR` for MS)"
        return f"## {title}\n\n{text}\n", Section(title, not_measured_html(text), "verdict")
    explanations = [f"- **{r['measurement']}**: {ROW_EXPLANATIONS[r['measurement']]}" for r in rows
                    if r["measurement"] in ROW_EXPLANATIONS]
    md = f"## {title}\n\n{verdict_markdown(rows)}\n" + "\n".join(explanations) + "\n"
    note = ('<p class="note">Thresholds come from <code>measure.thresholds</code> in the scene. '
            "Rows with nothing measured say so.</p>")
    return md, Section(title, verdict_html(rows) + note, "verdict")


def _section_attacks(run: Run) -> tuple[str, Section]:
    attacks = run.metrics.get("attacks")
    title = "Attacks"
    if not attacks or "final" not in attacks:
        text = "not measured: run `sim attack RUN_DIR`"
        return f"## {title}\n\n{text}\n", Section(title, not_measured_html(text), "attacks")
    final = attacks["final"]
    md = [f"## {title}", "",
          f"Minimal adversarial L2 distances at {fmt(_attack_points(attacks))} test points, step {fmt(final.get('step'))}.",
          "", attack_markdown(final).rstrip(), ""]
    md += [f"{line}\n" for line in _attack_extras(final)]
    return "\n".join(md), Section(title, attack_html(attacks), "attacks")


def _section_geometry(run: Run) -> tuple[str, Section]:
    geometry = run.metrics.get("geometry")
    if not geometry or not geometry.get("snapshots"):
        text = "not measured: run `sim measure RUN_DIR`"
        return f"## Geometry\n\n{text}\n", Section("Geometry", not_measured_html(text), "geometry")
    final = geometry["snapshots"][-1]
    title = f"Geometry at step {final.get('step')}"
    md, body = [f"## {title}", ""], []
    for group, pairs in geometry_rows(final).items():
        md += [f"### {group}", "", md_table(pairs, ["quantity", "value"]).rstrip(), ""]
        body.append(f"<h3>{escape(group)}</h3>\n" + html_table(pairs, ["quantity", "value"], numeric=["value"]))
    if len(body) == 0:
        text = "no geometry summary in metrics.json for the final snapshot"
        md.append(text + "\n")
        body.append(not_measured_html(text))
    settings = geometry.get("settings")
    if settings:
        flat = [(key, value) for key, value in settings.items() if not isinstance(value, dict)]
        body.append(details_html("measurement settings", html_table(flat, ["setting", "value"])))
    return "\n".join(md), Section(title, "\n".join(body), "geometry")


def _section_figures(run: Run, artifacts: RunArtifacts) -> tuple[str, Section]:
    images = [(path, FIGURES[path.name]) for path in artifacts.figures]
    images += [(path, path.stem.replace("_", " ")) for path in artifacts.other_images]
    if not images:
        text = "no figures in the run directory"
        return f"## Figures\n\n{text}\n", Section("Figures", not_measured_html(text))
    md = ["## Figures", ""]
    for path, caption in images:
        md += [markdown_link(path.stem.replace("_", " "), path.name, image=True), "", f"*{markdown_text(caption)}*", ""]
    return "\n".join(md), Section("Figures", "\n".join(figure_html(p, c) for p, c in images))


def _section_3d(run: Run, artifacts: RunArtifacts, max_faces: int) -> tuple[str, Section]:
    title = "3-D view of the decision boundary"
    md, body = [f"## {title}", ""], []
    if artifacts.boundary_mesh is not None:
        try:
            body.append(interactive_view_html(run, artifacts, max_faces=max_faces))
            what = "the final decision boundary" + (", the manifold" if artifacts.manifold_mesh else "")
            has_frame = frame_of_mesh(artifacts.boundary_mesh) is not None
            if run.data.ambient_dim == 3:
                what += " and the training points (coloured by class)"
                frame = "coordinates are the data's own (n = 3)"
            elif has_frame:
                what += " and the training points near the slice, at their projections"
                frame = "coordinates are those of the 3-D slice through R^n that the renderer chose"
            else:
                frame = ("coordinates are those of a 3-D slice through R^n; data points are not drawn "
                         "(the mesh does not record its slice)")
            body.append(f'<p class="note">Drag to rotate, scroll to zoom, click legend entries to hide layers. '
                        f"Shows {escape(what)}; {escape(frame)}. Meshes: "
                        + ", ".join(f"<code>{escape(p.name)}</code>" for p in artifacts.meshes)
                        + " (ParaView opens them).</p>")
            md.append("Interactive view: open `report.html` beside this file.")
        except Exception as error:  # a broken mesh or a missing plotly must not cost the whole report
            text = f"interactive view not available: {type(error).__name__}: {error}"
            body.append(not_measured_html(text))
            md.append(markdown_text(text))
        md += ["", "Meshes: " + ", ".join(markdown_link(p.name, p.name) for p in artifacts.meshes), ""]
    else:
        text = ("no boundary mesh in the run directory (3-D rendering was off or has not run: "
                "`sim render RUN_DIR`)")
        body.append(not_measured_html(text))
        md += [text, ""]
    for path in artifacts.renders:
        step = _step_of(path)
        caption = "3-D render" + (f" at step {step}" if step >= 0 else "")
        body.append(figure_html(path, caption))
        md += [markdown_link(caption, path.name, image=True), ""]
    return "\n".join(md), Section(title, "\n".join(body), "view-3d")


def _section_animation(run: Run, artifacts: RunArtifacts) -> tuple[str, Section]:
    title = "Training animation"
    if not artifacts.animations and not artifacts.videos:
        text = "no animation in the run directory (render.animation was off or has not run: `sim animate RUN_DIR`)"
        return f"## {title}\n\n{text}\n", Section(title, not_measured_html(text), "animation")
    md, body = [f"## {title}", ""], []
    caption = "The decision boundary over training, one frame per snapshot."
    for path in artifacts.animations:
        md += [markdown_link("training animation", path.name, image=True), "", f"*{caption}*", ""]
        body.append(figure_html(path, caption))
    if artifacts.videos:
        md.append("Video: " + ", ".join(markdown_link(p.name, p.name) for p in artifacts.videos) + "\n")
        body.append('<p class="note">Video beside this page: '
                    + ", ".join(f'<a href="{escape(p.name)}">{escape(p.name)}</a>' for p in artifacts.videos)
                    + "</p>")
    return "\n".join(md), Section(title, "\n".join(body), "animation")


def _section_seed_agreement(run: Run) -> tuple[str, Section]:
    """The seed-agreement experiment (metrics["seed_agreement"]): summary, figure, pairwise matrices."""
    result = run.metrics["seed_agreement"]
    title = "Seed agreement"
    rows = agreement_rows(result, with_seconds=False)
    labels = [f"model {i} (seed {seed})" for i, seed in enumerate(result["seeds"])]
    matrices = [(f"pairwise disagreement, {where}", result[key]["pairwise"])
                for key, where in (("manifold", "manifold"), ("frame", "render frame")) if result.get(key)]
    if result.get("chamfer"):
        matrices.append(("pairwise Chamfer distance (input units)", result["chamfer"]["pairwise"]))
    explanation = ("Each model is the scene's training with the seed replaced (initialisation and batch order), on "
                   "the same data. Disagreement: share of probe points where two models' predicted classes differ. "
                   "Chamfer: mean distance from each boundary vertex to the nearest vertex of the other boundary, "
                   "both ways, averaged; values near the grid spacing are at the resolution limit. If training "
                   "reached the same boundary from any initialisation, all of these would be near 0.")
    md = [f"## {title}", "", md_table(rows, ["quantity", "value"]).rstrip(), "", explanation, ""]
    body = [html_table(rows, ["quantity", "value"]), f'<p class="note">{escape(explanation)}</p>']
    figure = run.path / "seed_boundaries.png"
    if figure.is_file():
        md += [markdown_link("decision boundaries of every seed", figure.name, image=True), ""]
        body.append(figure_html(figure, "Left: the decision boundaries of all seeds in the render frame; right: seen "
                                         "from above, only their parts near the manifold."))
    for caption, matrix in matrices:
        table_rows = [[label, *values] for label, values in zip(labels, matrix)]
        md += [f"{caption}:", "", md_table(table_rows, ["model", *labels]).rstrip(), ""]
        body.append(details_html(caption, html_table(table_rows, ["model", *labels], numeric=labels)))
    return "\n".join(md), Section(title, "\n".join(body), "seed-agreement")


def relabel_reading(report: dict) -> str:
    """What the relabelling result says, from where chance lies relative to the 95% interval."""
    low, high = report["clean_test_accuracy_interval"]
    chance = report["chance"]  # the majority class's share: what a constant guess scores
    if low > chance:
        return ("Above chance: the perturbations carry features that generalise to the real task (Ilyas et al. "
                "2019's reading: adversarial examples are features).")
    if high < report.get("uniform_chance", chance):  # below 1/C too, not only below the majority share
        return ("Below chance: the features the perturbations left in place still point to the original class "
                "and outweigh what the perturbations added.")
    return "At chance: the perturbations carry nothing that generalises (bugs of the one model)."


def _section_relabel(run: Run, artifacts: RunArtifacts) -> tuple[str, Section]:
    report = run.metrics["relabel"]
    settings = report["settings"]
    low, high = report["clean_test_accuracy_interval"]
    text = (f"Every training point was moved by a targeted L2 PGD ({settings['steps']} steps, budget "
            f"{fmt(settings['epsilon'], 3)}) towards a {settings['target']} target class and relabelled with it "
            f"({percent(report['target_reached'])} reached the target; the target equals the true class for "
            f"{percent(report['target_equals_true_class'])}). A fresh model trained on that set alone reaches "
            f"{percent(report['fresh_model_clean_test_accuracy'])} [{percent(low)}, {percent(high)}, 95% Wilson] "
            f"on the clean test set, against chance {percent(report['chance'])} and the original model's "
            f"{percent(report['original_model_test_accuracy'])}. {relabel_reading(report)}")
    body = f"<p>{escape(text)}</p>"
    md = f"## Features-not-bugs relabelling\n\n{text}\n"
    figure = run.path / "relabel.png"
    if figure.is_file():
        body += figure_html(figure, caption="clean test accuracy of the model trained on relabelled adversarial examples")
        md += "\n![relabelling](relabel.png)\n"
    return md, Section("Features-not-bugs relabelling", body, "relabel")


def build_report(run: Run, max_faces: int = 40_000) -> tuple[str, str]:
    """(markdown, html) of the report of a loaded run."""
    artifacts = find_artifacts(run.path)
    title = f"{run.scene.name}: run report"
    training = run.metrics.get("training", {})
    final = training.get("final", {})
    subtitle = (f"{run.scene.manifold.family} manifold, k = {run.scene.manifold_dim()}, "
                f"n = {run.scene.manifold.ambient_dim}; {training.get('steps', '?')} steps, test accuracy "
                f"{percent(final.get('test_accuracy'))}.")
    parts = [_section_scene(run), _section_verdict(run), _section_3d(run, artifacts, max_faces),
             _section_attacks(run), _section_geometry(run), _section_figures(run, artifacts),
             _section_animation(run, artifacts)]
    if "seed_agreement" in run.metrics:
        parts.append(_section_seed_agreement(run))
    if "relabel" in run.metrics:
        parts.append(_section_relabel(run, artifacts))
    heading = f"{markdown_text(run.scene.name)}: run report"
    markdown = f"# {heading}\n\n{markdown_text(subtitle)}\n\n" + "\n".join(md for md, _ in parts)
    page = html_page(title, [section for _, section in parts], subtitle)
    return markdown, page


def write_report(run_or_path: Run | str | Path, max_faces: int = 40_000) -> tuple[Path, Path]:
    """Write report.md and report.html into the run directory (atomically). Returns their paths."""
    run = run_or_path if isinstance(run_or_path, Run) else load_run(run_or_path)
    markdown, page = build_report(run, max_faces=max_faces)
    md_path, html_path = run.path / "report.md", run.path / "report.html"
    write_text(md_path, markdown)
    write_text(html_path, page)
    return md_path, html_path
