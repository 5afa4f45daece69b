"""The HTML kit every page of the project is built from: one style sheet, sections, tables,
embedded figures, collapsible blocks, and the same tables in markdown.

    page = html_page("title", [Section("Scene", html_table(rows, ["field", "value"]))])

Pages are self-contained: CSS inline, images embedded as data URIs (up to EMBED_LIMIT_BYTES,
linked beside the page above that), plotly.js inline when a section holds an interactive view
(`simulator.render.interactive.PLOTLY_MARKER`). Cells are printed with the project's one
number formatter (`simulator.formatting.fmt`) and escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from simulator.formatting import fmt
from simulator.render.interactive import PLOTLY_MARKER, plotly_js_html
from simulator.report.markdown import markdown_cell

EMBED_LIMIT_BYTES = 40 * 2**20  # larger images/animations are linked instead of embedded


def escape(value: Any) -> str:
    """Text as HTML (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


CSS = """
:root { --fg: #1f2328; --muted: #57606a; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
h1 { font-size: 1.7rem; margin: .4rem 0 .2rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
p.subtitle { color: var(--muted); margin: 0 0 .8rem; }
nav.toc { font-size: .92rem; margin: .6rem 0 1rem; }
nav.toc a { color: var(--accent); text-decoration: none; margin-right: 1.1rem; white-space: nowrap; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid var(--line); padding: .28rem .55rem; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: .3rem; }
figure { margin: 1rem 0 1.4rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .25rem; }
.missing { color: var(--muted); font-style: italic; }
.warning { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .35rem .6rem; margin: .4rem 0; }
.note { color: var(--muted); font-size: .9rem; }
.ms { font-size: 1.02rem; margin: .4rem 0 1rem; }
pre { background: var(--soft); padding: .8rem; overflow: auto; font-size: .82rem; border-radius: 4px; }
details { margin: .5rem 0 1rem; }
details > summary { cursor: pointer; color: var(--accent); }
.view3d { border: 1px solid #eaeef2; margin: .5rem 0 1rem; }
"""


@dataclass
class Section:
    """One `<section>` of a page: a heading and HTML content; `anchor` defaults to a slug."""

    title: str
    body: str
    anchor: str | None = None

    def id(self) -> str:
        return self.anchor or _slug(self.title)

    def html(self) -> str:
        return f'<section id="{escape(self.id())}">\n<h2>{escape(self.title)}</h2>\n{self.body}\n</section>'


def html_page(title: str, sections: Sequence[Section], subtitle: str = "", toc: bool = True) -> str:
    """A complete, self-contained HTML document (inline CSS; plotly.js inline when needed)."""
    body = "\n".join(section.html() for section in sections)
    needs_plotly = PLOTLY_MARKER in body
    nav = ""
    if toc and len(sections) > 1:
        nav = '<nav class="toc">' + "".join(f'<a href="#{escape(s.id())}">{escape(s.title)}</a>'
                                             for s in sections) + "</nav>"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style>",
        plotly_js_html() if needs_plotly else "",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else "",
        nav,
        body,
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def html_table(rows: Iterable[dict | Sequence], columns: Sequence[str] | None = None,
               headers: Sequence[str] | None = None, caption: str | None = None,
               numeric: Sequence[str] = ()) -> str:
    """A table of rows (dicts keyed by `columns`, or sequences). Cells are escaped text;
    columns named in `numeric` are right-aligned."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows and isinstance(rows[0], dict) else \
            [str(i) for i in range(len(rows[0]) if rows else 0)]
    headers = list(headers) if headers is not None else list(columns)
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        values = [row.get(c, "") for c in columns] if isinstance(row, dict) else list(row)
        cells = []
        for column, value in zip(columns, values):
            css = ' class="num"' if column in numeric else ""
            cells.append(f"<td{css}>{escape(fmt(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def md_table(rows: Iterable[dict | Sequence], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """The same table in GitHub markdown. Every cell is escaped (`markdown_cell`): cells often
    hold user text (a scene's name and description), which must not add markup or break the row."""
    headers = list(headers) if headers is not None else list(columns)
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        values = [row.get(c, "") for c in columns] if isinstance(row, dict) else list(row)
        lines.append("| " + " | ".join(markdown_cell(fmt(v)) for v in values) + " |")
    return "\n".join(lines) + "\n"


MIME_TYPES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".svg": "image/svg+xml", ".webp": "image/webp"}


def data_uri(path: str | Path) -> str:
    path = Path(path)
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure_html(path: str | Path, caption: str | None = None, alt: str | None = None,
                max_embed_bytes: int = EMBED_LIMIT_BYTES) -> str:
    """An embedded image (data URI) with a caption; a note when the file is missing; a relative
    link when it is larger than `max_embed_bytes`."""
    path = Path(path)
    alt = alt or caption or path.name
    if not path.is_file():
        return not_measured_html(f"{path.name}: not found")
    label = f"{escape(caption)} " if caption else ""
    if path.stat().st_size > max_embed_bytes:
        return (f'<figure><p class="note">{path.name} ({path.stat().st_size / 2**20:.0f} MiB) is too large to embed: '
                f'<a href="{escape(path.name)}">open it beside this page</a>.</p>'
                f"<figcaption>{label}<code>{escape(path.name)}</code></figcaption></figure>")
    return (f'<figure><img src="{data_uri(path)}" alt="{escape(alt)}" loading="lazy">'
            f"<figcaption>{label}<code>{escape(path.name)}</code></figcaption></figure>")


def details_html(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible block; `body` is HTML."""
    return f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>\n{body}\n</details>"


def code_html(text: str) -> str:
    return f"<pre><code>{escape(text)}</code></pre>"


def not_measured_html(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'
