"""HTML building blocks of the report: escaping, number formats, PNG data URIs, tables, sections
and the inline style sheet (no external CSS, scripts or fonts)."""
from __future__ import annotations

import base64
import html
import io
from typing import Any

from .run_files import as_float


def esc(value: Any) -> str:
    return html.escape(str(value))


def pct(value: Any, digits: int = 2) -> str:
    v = as_float(value)
    return "-" if v != v else f"{100 * v:.{digits}f}%"


def fmt(value: Any) -> str:
    """A summary value as short text: floats with 4 decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig, dpi: int = 90) -> str:
    """A matplotlib figure as an embeddable PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return png_uri(buf.getvalue())


def image_uri(image) -> str:
    """A PIL image as an embeddable PNG data URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return png_uri(buf.getvalue())


def img(uri: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" alt="{esc(alt)}" src="{uri}">'


def table(header: list[str], rows: list[list[Any]], css: str = "") -> str:
    """An HTML table; every cell is escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str, css: str = "note") -> str:
    return f'<p class="{css}">{esc(text)}</p>'


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.3em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; margin: 0.5em 0; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; word-break: break-all; }
pre { background: #f6f6f6; padding: 0.8em; overflow: auto; max-height: 30em; font-size: 0.85em; }
details summary { cursor: pointer; color: #245; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead th { background: #f3f3f3; }
div.scroll { max-height: 22em; overflow-y: auto; display: inline-block; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
img.half { max-width: min(100%, 720px); }
p.note { color: #555; font-size: 0.92em; margin: 0.3em 0; }
p.warn { background: #fff1f0; border-left: 4px solid #d4380d; padding: 0.5em 0.8em; }
p.ok { background: #f0f9eb; border-left: 4px solid #52a33a; padding: 0.5em 0.8em; }
div.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; }
div.grid figure { margin: 0; padding: 6px; border: 2px solid #e4e4e4; border-radius: 4px; text-align: center; }
div.grid figure.noisy { border-color: #d4380d; }
img.thumb, div.thumb { width: 64px; height: 64px; object-fit: contain; background: #eee; }
figcaption { font-size: 0.78em; margin-top: 4px; }
figcaption span { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
div.side { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
footer { margin-top: 3em; color: #888; font-size: 0.85em; }
"""
