"""The report of a real-image run: report.md and report.html from its metrics.json and figures.

    write_text(run_dir / "report.md", real_report_markdown(metrics))
    write_text(run_dir / "report.html", real_report_html(metrics, run_dir))

The same pieces as the synthetic run report (`simulator.report.run_report`: the verdict and
attack tables; the HTML kit of `simulator.report.html`), with the set-up of a real run (images,
the autoencoder manifold or its absence, the classifier) in place of the scene.
"""

from __future__ import annotations

from pathlib import Path

from simulator.formatting import fmt, percent
from simulator.report.attack_tables import attack_markdown, specificity_text
from simulator.report.html import Section, escape, figure_html, html_page, html_table
from simulator.report.markdown import markdown_text
from simulator.report.run_report import attack_html, verdict_html
from simulator.report.verdict_tables import verdict_markdown


def real_report_html(metrics: dict, folder: Path) -> str:
    """A self-contained report.html for a real run: set-up, verdict, attack table, figures."""
    real = metrics["real"]
    folder = Path(folder)
    setup = html_table(real_setup_rows(metrics), ["item", "value"])
    figures = [figure_html(folder / "attack_norms.png", "Minimal adversarial distances per attack mode.")]
    if (folder / "examples.png").is_file():
        figures.append(figure_html(folder / "examples.png",
                                   "Attacked images and their minimal perturbation in every mode."))
    sections = [
        Section("Set-up", setup),
        Section("Verdict", verdict_html(metrics["geometry"]["snapshots"][-1]["verdict"])),
        Section("Attacks", (f'<p class="note">{escape(specificity_line(metrics))}</p>\n'
                            if real.get("manifold") == "none" else "") + attack_html(metrics["attacks"])),
        Section("Figures", "\n".join(figures)),
    ]
    subtitle = f"real images: {real['dataset']['name']}, n = {real['ambient_dim']}, k = {real['subspace_dim']}" \
        if "subspace_dim" in real else f"real images: {real['dataset']['name']}"
    return html_page(f"{metrics['scene']}", sections, subtitle=subtitle)


def specificity_line(metrics: dict) -> str:
    """'manifold specificity MS = ...', or why it is not defined (no manifold estimate)."""
    if metrics["real"].get("manifold") == "none":
        return "manifold specificity MS: not defined without a manifold estimate (manifold: none; no on/off rows)"
    return f"manifold specificity MS = {specificity_text(metrics['attacks']['final'])}"


def real_report_markdown(metrics: dict) -> str:
    """A short markdown page for one real run: set-up, the paper's table with the control rows, tau."""
    table = attack_markdown(metrics["attacks"]["final"])
    if metrics["real"].get("manifold") == "none":  # the table's MS line says which modes are missing
        table = table.rstrip("\n").rsplit("\n", 1)[0] + "\n" + specificity_line(metrics) + "\n"
    # The experiment's name, data set and image names are the user's text: escaped.
    lines = [f"# {markdown_text(metrics['scene'])} (real images: {markdown_text(metrics['real']['dataset']['name'])})",
             ""]
    lines += [f"- {label}: {markdown_text(value)}" for label, value in real_setup_rows(metrics)]
    lines += ["", "## Minimal adversarial distances", "", table,
              "## Verdict", "", verdict_markdown(metrics["geometry"]["snapshots"][-1]["verdict"]).rstrip()]
    return "\n".join(lines) + "\n"


def real_setup_rows(metrics: dict) -> list[tuple[str, str]]:
    """(label, text) lines describing a real run, for both reports."""
    real = metrics["real"]
    data = real["dataset"]
    rows = [("images", f"{data['n_train']} train / {data['n_test']} test, shape {data['image_shape']}, "
                       f"n = {real['ambient_dim']}" + (f" ({', '.join(data['image_names'])})"
                                                        if data.get("image_names") else ""))]
    if real.get("manifold", "autoencoder") == "autoencoder":
        recon = real["autoencoder"]["reconstruction"]
        recon = recon.get("test", recon["train"])
        jac = real["jacobian"]
        rows += [("autoencoder manifold", f"k = {real['latent_dim']}, test RMSE per pixel {fmt(recon['rmse'])}, "
                                          f"mean relative error {fmt(recon['mean_relative_error'], 3)}"),
                 ("decoder Jacobian", f"median condition number {fmt(jac['median_condition_number'], 3)}, "
                                      f"full rank at {percent(jac['share_full_rank'], 0)} of points")]
    else:
        rows.append(("manifold", f"none estimated: the random-subspace control alone (k = {real['subspace_dim']} "
                                 f"random dimensions); no tangent fraction, no on/off rows, no MS"))
    classifier = real.get("classifier", {})
    if classifier.get("pretrained") and classifier.get("labels", "").startswith("the data set"):
        scanned = classifier.get("scanned_accuracy")
        checked = (f"; top-1 accuracy {fmt(scanned['accuracy'], 3)} on the first {scanned['scanned']} test images "
                   f"(those classified to find the measured ones; an estimate)") if scanned else ""
        rows.append(("classifier", f"pretrained {classifier['pretrained']}; labels are the data set's{checked}"))
    elif classifier.get("pretrained"):
        rows.append(("classifier", f"pretrained {classifier['pretrained']}; labels are its own top-1 "
                                   f"classes {classifier['top1']}"))
    else:
        rows.append(("classifier", f"test accuracy {fmt(metrics['training']['final']['test_accuracy'], 3)}"))
    tangent = metrics["geometry"]["snapshots"][-1].get("tangent")
    if tangent:
        rows.append(("tangent fraction of the margin gradient",
                     f"RMS tau {fmt(tangent['rms_tau'], 3)} vs random sqrt(k/n) {fmt(tangent['baseline_rms_tau'], 3)} "
                     f"(ratio {fmt(tangent['ratio_to_baseline'], 3)})"))
    return rows
