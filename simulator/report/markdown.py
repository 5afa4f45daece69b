"""Markdown that user text cannot break: every string from a scene or experiment file (its name,
description, label settings, a swept value, a file name) goes through these before it lands in
a .md file the tool writes.

    markdown_text("<script>x</script> [a](javascript:b)")  # inline text, e.g. after "# " or "- "
    markdown_cell("a | b\\nc")                              # one cell of a GitHub table
    markdown_link("figure", "cross section.png")          # [figure](cross%20section.png)
    markdown_code_block(yaml_text, "yaml")                 # a fence the text cannot close

Escaping follows CommonMark (any ASCII punctuation may be backslash-escaped; entities stand for
themselves) and GitHub's extensions (tables, strikethrough, autolinks, math). HTML pages escape
on their own (`simulator.report.html.escape`); these are for markdown only.
"""

from __future__ import annotations

import re
from urllib.parse import quote

# Characters that start or end markup anywhere on a line: code spans, emphasis, links and
# images, strikethrough, table cells, GitHub math, autolinks ("scheme:" and "user@host"),
# backslash escapes themselves, and a closing heading sequence.
_INLINE_METACHARACTERS = "\\`*_[]|~$:@#"
_ESCAPE_INLINE = re.compile("([" + re.escape(_INLINE_METACHARACTERS) + "])")
# Raw HTML and entities: written as entities, which every renderer shows as the character itself
# (a backslash before "<" is not understood by all renderers, e.g. Python-Markdown).
_HTML_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
# GitHub turns "www.example.com" into a link even without a scheme.
_WWW = re.compile(r"(?i)\b(www)\.")
# Block markers that only count at the start of a line: lists, headings, quotes, setext rules.
_LINE_START_MARKER = re.compile(r"^(\d+)([.)])|^([-+=])")


def markdown_cell(value: object) -> str:
    """`value` as the text of one GitHub-table cell: no markup, no HTML, no link, and the row
    stays one row (pipes escaped, line breaks become spaces)."""
    text = " ".join(str(value).split())  # newlines (any Unicode line break) would end the table row
    for character, entity in _HTML_ENTITIES:
        text = text.replace(character, entity)
    text = _ESCAPE_INLINE.sub(r"\\\1", text)
    return _WWW.sub(r"\1\\.", text)


def markdown_text(value: object) -> str:
    """`value` as inline markdown text that renders literally: a heading's or list item's text,
    or words inside a paragraph. Also safe at the start of a line (a leading "-", "+", "=" or
    "1." is escaped so it cannot open a list or a heading)."""
    text = markdown_cell(value)
    return _LINE_START_MARKER.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", text)


def markdown_link(text: object, target: str | object, image: bool = False) -> str:
    """A link (or an image with `image`) to a file beside the page: the text is escaped, the target
    percent-encoded, so neither can add markup or turn into another kind of URL."""
    return f"{'!' if image else ''}[{markdown_text(text)}]({quote(str(target))})"


def markdown_code_block(text: str, info: str = "") -> str:
    """A fenced code block around `text` (shown verbatim): the fence is longer than any run of
    backticks inside, so no line of the text can close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"
