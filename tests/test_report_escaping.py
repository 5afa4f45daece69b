"""Markdown the tool writes cannot be hijacked by a scene's own text, and reports hold no
wall-clock time (two runs of one scene write byte-identical reports).

A scene whose name and description carry HTML, script, javascript: links, markdown syntax,
pipes, backticks and newlines is run once (tiny budget); every markdown page written from it is
rendered with a real CommonMark renderer (markdown-it-py, which rich depends on) and checked for
tags, links and table rows that the text must not produce. The HTML report escapes on its own
(tests/test_report.py).
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import run_scene
from simulator.config.loading import scene_from_dict
from simulator.report.comparison import write_comparison
from simulator.report.markdown import (
    markdown_cell,
    markdown_code_block,
    markdown_link,
    markdown_text,
)
from simulator.report.real_report import real_report_markdown
from simulator.report.run_report import write_report
from simulator.config.sweep import BackendSpec, Sweep
from simulator.sweeps.report import write_sweep_report
from simulator.sweeps.table import MEASUREMENTS

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (a dependency of rich) renders the markdown")

NAME = "evil <img src=x onerror=alert(1)> [x](javascript:alert(1)) a|b `c` *d* www.example.com"
DESCRIPTION = ("<script>alert(1)</script> [click](javascript:alert(1)) | pipe `tick` **bold** ~~strike~~ $x$ "
               "<https://evil.example> me@example.com http://evil.example &lt;b&gt;\n# heading\n- item\n"
               "```\nfence\n```")
EVIL_TEXTS = [NAME, DESCRIPTION, "1. starts a list", "- bullet", "+ plus", "=====", "> quote", "    indented code",
              "\\`not code\\`", "a\\|b", "x_y_z __init__", "[a]: https://ref.example", "![i](x.png)", "a\r\nb\u2028c"]
TINY = {
    "train.steps": 30, "data.n_train": 200, "data.n_test": 100, "measure.n_points": 30, "snapshots.count": 2,
    "train.device": "cpu", "model.hidden": [16], "render.cross_section_resolution": 16,
    "measure.height_resolution": 8, "measure.final_height_resolution": 8, "measure.attacks.enabled": False,
    "render.three_d": False, "render.animation": False,
    # adversarial training (two PGD steps) so that the adversarial-vs-plain page can be written too
    "train.adversarial.enabled": True, "train.adversarial.steps": 2,
}
ALLOWED_TAGS = {"h1", "h2", "h3", "p", "em", "strong", "code", "pre", "ul", "li", "table", "thead", "tbody", "tr",
                "th", "td", "a", "img", "details", "summary"}


def render(markdown: str) -> str:
    """CommonMark (raw HTML allowed, as on GitHub before its sanitiser) with GitHub tables and strikethrough."""
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


class _Page(HTMLParser):
    """Tags, link targets, image sources and table rows (cell texts) of rendered HTML."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.hrefs, self.sources, self.attributes, self.rows = set(), [], [], [], []
        self._cell = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes += [name for name, _ in attrs]
        values = dict(attrs)
        if tag == "a":
            self.hrefs.append(values.get("href", ""))
        if tag == "img":
            self.sources.append(values.get("src", ""))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def assert_inert(markdown: str, folder: Path | None = None) -> _Page:
    """The rendered page has only the tags the tool writes, links and images to files beside it,
    and no event-handler attribute; returns the parsed page."""
    page = _Page(render(markdown))
    assert page.tags <= ALLOWED_TAGS, page.tags - ALLOWED_TAGS
    assert not [name for name in page.attributes if name.startswith("on")]
    for target in page.hrefs + page.sources:
        assert ":" not in target and not target.startswith("/"), target  # a file beside the page, no scheme
        if folder is not None:
            assert (folder / target).is_file(), target
    # GitHub links bare URLs and addresses in text (not in code blocks): none of the user's may stay intact
    text = re.sub(r"^(`{3,}).*?^\1$", "", markdown, flags=re.DOTALL | re.MULTILINE)
    for fragment in ("http://evil", "www.example", "me@example"):
        assert fragment not in text
    return page


def collapsed(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- the helpers


@pytest.mark.parametrize("text", EVIL_TEXTS)
def test_escaped_text_renders_as_itself(text):
    html = render(f"- {markdown_text(text)}\n\nstart {markdown_text(text)}\n\n{markdown_text(text)}\n")
    page = _Page(html)
    assert page.tags <= {"ul", "li", "p"}, html  # no heading, quote, code, link, image, emphasis or raw HTML
    visible = _text_of(html)
    assert visible.count(collapsed(text)) == 3, visible


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="<>&|`*_[]()!#~$:@\\-+=.1 \nwxa/\"'", max_size=30))
def test_any_punctuation_renders_literally(text):
    html = render(f"start {markdown_text(text)}\n\n| a | b |\n|---|---|\n| {markdown_cell(text)} | end |\n")
    page = _Page(html)
    assert page.tags <= {"p", "table", "thead", "tbody", "tr", "th", "td"}, html
    assert page.rows[-1] == [collapsed(text), "end"]  # one row of two cells, whatever the text
    assert _text_of(html).startswith(f"start {collapsed(text)}".rstrip())


def _text_of(html: str) -> str:
    parser = HTMLParser(convert_charrefs=True)
    parts = []
    parser.handle_data = parts.append
    parser.feed(html)
    return " ".join("".join(parts).split())


def test_code_block_and_link_cannot_be_closed_from_inside():
    text = "a: 1\n```\n  ````\nb: '<script>x</script>'"
    html = render(markdown_code_block(text, "yaml") + "\n\nafter\n")
    assert html.count("<pre>") == 1 and "<script>" not in html and html.rstrip().endswith("<p>after</p>")
    page = _Page(render(markdown_link("see [it]", "a file (1).png") + " " +
                        markdown_link("x", "javascript:alert(1)", image=True)))
    assert page.hrefs == ["a%20file%20%281%29.png"] and page.sources == ["javascript%3Aalert%281%29"]


# --------------------------------------------------------------------------- pages from an evil scene


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    import torch

    raw = {"name": NAME, "description": DESCRIPTION,
           "manifold": {"family": "flat", "dim": 2, "ambient_dim": 3, "embedding": "identity"},
           "labels": {"rule": "clusters", "n_clusters": 16, "spread": 0.05}}
    scene = scene_from_dict(raw, overrides=TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread avoids OpenMP spin-waits on a busy machine
    try:
        summary = run_scene(scene, out_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        torch.set_num_threads(threads)
    return summary.path


def test_run_report_shows_the_scene_text_without_markup(evil_run):
    markdown = (evil_run / "report.md").read_text()
    page = assert_inert(markdown, evil_run)
    assert "script" not in page.tags and "details" in page.tags  # the tool's own HTML block stays
    scene_row = next(row for row in page.rows if row and row[0] == "scene")
    assert scene_row == ["scene", f"{NAME}: {collapsed(DESCRIPTION)}"]  # all of it, in one cell
    heading = render(markdown).split("</h1>")[0]
    assert _text_of(heading) == f"{NAME}: run report"
    assert render(markdown).count("<pre>") == 1  # the resolved scene: one code block, not closed early
    page_html = (evil_run / "report.html").read_text()
    assert "<script>alert" not in page_html and "<img src=x" not in page_html


@pytest.mark.filterwarnings("ignore:Tight layout not applied")  # the long name squeezes the plot
def test_comparison_sweep_and_adversarial_pages_escape_names(evil_run, tmp_path):
    from simulator.report.adversarial_training import write_adversarial_comparison

    md_path, _ = write_comparison([evil_run], tmp_path / "comparison")
    page = assert_inert(md_path.read_text(), tmp_path / "comparison")
    assert page.rows[1][0] == NAME and len(page.rows[1]) == len(page.rows[0])

    value = "<b>v</b> | [x](javascript:alert(1))"
    sweep = Sweep(NAME, value, tmp_path / "base.yaml", tmp_path / "base.yaml", {"render.dpi": value}, ["model.tag"],
                  [], BackendSpec())
    rows = [{"run": NAME, "model.tag": value, "n": 3, "k": 2, "status": "failed", "error": value,
             **dict.fromkeys(MEASUREMENTS)}]
    (tmp_path / "sweep").mkdir()
    write_sweep_report(sweep, tmp_path / "sweep", rows)
    page = assert_inert((tmp_path / "sweep" / "sweep.md").read_text(), tmp_path / "sweep")
    assert page.rows[1][:2] == [NAME, value] and len(page.rows[1]) == len(page.rows[0])
    sweep_html = (tmp_path / "sweep" / "sweep.html").read_text()
    assert "<script>alert" not in sweep_html and "<b>v</b>" not in sweep_html

    write_adversarial_comparison(evil_run, evil_run, tmp_path / "adversarial")
    text = (tmp_path / "adversarial" / "adversarial_training.md").read_text()
    assert_inert(text, tmp_path / "adversarial")
    assert _text_of(render(text).split("</h1>")[0]) == f"Adversarial training vs plain training: {NAME}"


def test_real_report_escapes_the_experiment_and_image_names(evil_run):
    metrics = json.loads((evil_run / "metrics.json").read_text())
    real_metrics = {
        "scene": NAME, "attacks": {"final": {"modes": {}}}, "training": metrics["training"],
        "geometry": {"snapshots": [{"verdict": metrics["geometry"]["snapshots"][-1]["verdict"]}]},
        "real": {"dataset": {"name": "[d](javascript:x)", "n_train": 2, "n_test": 2, "image_shape": [8, 8],
                             "image_names": ["<img src=x onerror=alert(1)>.png", "a|b.png"]},
                 "ambient_dim": 64, "manifold": "none", "subspace_dim": 5, "latent_dim": None,
                 "classifier": {"pretrained": "net `x`", "top1": ["cat"]}},
    }
    markdown = real_report_markdown(real_metrics)
    assert_inert(markdown)
    assert "<img src=x onerror=alert(1)>.png" in _text_of(render(markdown))


# --------------------------------------------------------------------------- no wall-clock time in reports


def test_reports_hold_no_durations_or_paths(evil_run, tmp_path):
    """A second run differs from the first only in its durations: rewriting the report of a copy
    whose every stored duration changed gives the same bytes, and no absolute path is in it."""
    copy = tmp_path / "again" / evil_run.name
    shutil.copytree(evil_run, copy)
    for name in ("metrics.json", "timings.json"):
        if (copy / name).is_file():
            (copy / name).write_text(json.dumps(_slower(json.loads((copy / name).read_text()))))
    write_report(copy)
    for name in ("report.md", "report.html"):
        first, second = (evil_run / name).read_bytes(), (copy / name).read_bytes()
        assert first == second, name
        assert str(evil_run.parent).encode() not in first and str(tmp_path).encode() not in second


def _slower(value, key: str = ""):
    """Every duration ("seconds" keys, timings.json's "...seconds" entries) multiplied by 7."""
    if isinstance(value, dict):
        return {k: _slower(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_slower(v) for v in value]
    if key.endswith("seconds") and isinstance(value, (int, float)):
        return value * 7 + 1
    return value
