"""A tiny document model rendered to Markdown and to one self-contained HTML file.

The report is built once as blocks (headings, paragraphs, banners, warning boxes, bullet
lists, tables, images) so that the Markdown and the HTML always say the same thing. The HTML inlines its
style and embeds every image as a base64 PNG, so it can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; }
.banner { background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em; font-weight: bold; }
.guards { background: #fdecea; border: 2px solid #c0392b; padding: 0.4em 0.8em; margin: 1em 0; }
.guards summary { font-weight: bold; cursor: pointer; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; }
"""


@dataclass(frozen=True)
class Block:
    """One piece of the report; build it with the class methods."""

    kind: str
    text: str = ""
    level: int = 0
    items: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    png: str = ""
    svg: str = ""

    @classmethod
    def heading(cls, level: int, text: str) -> Block:
        return cls("heading", text=text, level=level)

    @classmethod
    def paragraph(cls, text: str) -> Block:
        return cls("paragraph", text=text)

    @classmethod
    def banner(cls, text: str) -> Block:
        """A warning that must not be missed (e.g. a partial report)."""
        return cls("banner", text=text)

    @classmethod
    def warning(cls, text: str, items: list[str]) -> Block:
        """A boxed warning, collapsed under its lead line, with a list (e.g. the verdict
        guards that fired): the reader sees that it is there without it pushing the rest
        down."""
        return cls("warning", text=text, items=tuple(items))

    @classmethod
    def bullets(cls, items: list[str]) -> Block:
        return cls("bullets", items=tuple(items))

    @classmethod
    def table(cls, headers: list[str], rows: list[list[str]]) -> Block:
        return cls("table", headers=tuple(headers), rows=tuple(tuple(row) for row in rows))

    @classmethod
    def image(cls, caption: str, png: str, svg: str) -> Block:
        """A figure: PNG and SVG paths relative to the report directory."""
        return cls("image", text=caption, png=png, svg=svg)


@dataclass(frozen=True)
class Document:
    """A titled sequence of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(document: Document) -> str:
    """GitHub-flavoured Markdown; images link to their PNG and SVG files."""
    lines: list[str] = []
    for block in document.blocks:
        if block.kind == "heading":
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif block.kind == "paragraph":
            lines += [block.text, ""]
        elif block.kind == "banner":
            lines += [f"> **⚠ {block.text}**", ""]
        elif block.kind == "warning":
            lines += [
                f"<details><summary>⚠ {html.escape(block.text)}</summary>",
                "",
                *(f"- {item}" for item in block.items),
                "",
                "</details>",
                "",
            ]
        elif block.kind == "bullets":
            lines += [*(f"- {item}" for item in block.items), ""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif block.kind == "image":
            lines += [
                f"![{block.text}]({block.png})",
                "",
                f"*{block.text}* ([SVG]({block.svg}))",
                "",
            ]
        else:
            raise ValueError(f"unknown block kind {block.kind!r}")
    return "\n".join(lines)


def render_html(document: Document, base_dir: Path) -> str:
    """One HTML file with inline CSS and images embedded as base64 PNG (read from base_dir)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(document.title)}</title><style>{_STYLE}</style></head><body>",
    ]
    for block in document.blocks:
        if block.kind == "heading":
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif block.kind == "paragraph":
            parts.append(f"<p>{esc(block.text)}</p>")
        elif block.kind == "banner":
            parts.append(f'<p class="banner">⚠ {esc(block.text)}</p>')
        elif block.kind == "warning":
            items = "".join(f"<li>{esc(item)}</li>" for item in block.items)
            parts.append(
                f'<details class="guards"><summary>⚠ {esc(block.text)}</summary>'
                f"<ul>{items}</ul></details>"
            )
        elif block.kind == "bullets":
            parts.append(
                "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
            )
        elif block.kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "image":
            data = base64.b64encode((base_dir / block.png).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{esc(block.text)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block.text)}</figcaption></figure>"
            )
        else:
            raise ValueError(f"unknown block kind {block.kind!r}")
    parts.append("</body></html>")
    return "\n".join(parts)
