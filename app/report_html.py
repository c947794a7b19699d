"""HTML building blocks of the run report: tables (optionally sortable), definition lists, number
cards, and the page itself with its inline CSS and the one small sorting script. Everything from a
file is escaped here or by the caller; nothing is fetched when the page opens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from app.report_svg import page_defs

DASH = "—"


@dataclass
class Col:
    """A table column: its header, and whether it sorts as numbers."""

    label: str
    numeric: bool = False
    title: str = ""


@dataclass
class Cell:
    """A table cell: the text shown, the value it sorts by (numbers in full precision) and extra
    attributes (`data-key` for the browser test)."""

    text: str
    sort: Any = None
    attrs: str = ""


def pct(v: float | None, digits: int = 2) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def cell(v: Any, digits: int = 2, key: str = "") -> Cell:
    """A number cell (or a text one for anything else); empty values show a dash and sort last."""
    attrs = f' data-key="{escape(key)}"' if key else ""
    if v is None or v == "":
        return Cell(DASH, "", attrs)
    if isinstance(v, bool):
        return Cell("yes" if v else "no", str(v), attrs)
    if isinstance(v, int):
        return Cell(str(v), v, attrs + f' data-value="{v}"')
    if isinstance(v, float):
        return Cell(f"{v:.{digits}f}", repr(v), attrs + f' data-value="{v!r}"')
    return Cell(escape(str(v)), str(v), attrs)


def table(
    cols: Sequence[Col],
    rows: Sequence[Sequence[Cell | Any]],
    *,
    sortable: bool = False,
    caption: str = "",
    cls: str = "",
) -> str:
    """A table; `sortable` gives each header a button that sorts the rows (numbers as numbers)."""
    head = []
    for c in cols:
        kind = ' data-type="num"' if c.numeric else ""
        title = f' title="{escape(c.title)}"' if c.title else ""
        label = escape(c.label).replace("_", "_<wbr>")  # metrics.csv names may wrap after an underscore
        inner = (
            f'<button type="button">{label}<span class="arrow" aria-hidden="true"></span></button>'
            if sortable
            else label
        )
        head.append(f'<th scope="col"{kind}{title}{" class=num" if c.numeric else ""}>{inner}</th>')
    body = []
    for row in rows:
        tds = []
        for c, v in zip(cols, row, strict=True):
            x = v if isinstance(v, Cell) else cell(v)
            sort = f' data-v="{escape(str(x.sort))}"' if sortable and x.sort is not None else ""
            tds.append(f"<td{' class=num' if c.numeric else ''}{sort}{x.attrs}>{x.text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    classes = " ".join(filter(None, ["sortable" if sortable else "", cls]))
    cap = f"<caption>{caption}</caption>" if caption else ""
    wrap = "table-wrap short" if len(rows) <= 30 else "table-wrap"  # a short table is printed on one page
    return (
        f'<div class="{wrap}"><table class="{classes}">{cap}<thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def dl(pairs: Sequence[tuple[str, str]]) -> str:
    """A definition list of (term, HTML) pairs; pairs with an empty value are left out."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in pairs if v)
    return f'<dl class="facts">{items}</dl>'


def cards(items: Sequence[tuple[str, str, str, Any]]) -> str:
    """Headline numbers: (label, shown text, data-key, full value) each."""
    out = []
    for label, text, key, value in items:
        data = f' data-key="{escape(key)}" data-value="{escape(repr(value))}"' if key else ""
        out.append(
            f'<div class="card"><div class="card-label">{escape(label)}</div>'
            f'<div class="card-value"{data}>{text}</div></div>'
        )
    return f'<div class="cards">{"".join(out)}</div>'


def figure(svg: str, caption: str, legend: str = "") -> str:
    return f"<figure>{svg}{legend}<figcaption>{caption}</figcaption></figure>"


def code(text: str) -> str:
    return f"<code>{escape(text)}</code>"


CSS = """
:root { --fg:#1a1a1a; --muted:#555; --line:#d0d0d0; --bg:#fff; --head:#f3f5f8; --accent:#0072B2; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; max-width: 1180px; padding: 18px 24px 48px; }
h1 { font-size: 1.55em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.3em; margin: 1.6em 0 0.4em; padding-bottom: 0.2em; border-bottom: 2px solid var(--accent); }
h3 { font-size: 1.1em; margin: 1.3em 0 0.4em; }
h4 { font-size: 1em; margin: 1em 0 0.3em; }
p.note, .muted { color: var(--muted); font-size: 0.92em; }
code { font: 0.88em/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #f4f4f4;
  padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
pre { background: #f4f4f4; padding: 8px 10px; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
nav ul { margin: 0.3em 0; padding-left: 1.2em; columns: 2; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0.5em 0; }
dl.facts dt { font-weight: 600; color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 0.6em 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 120px; }
.card-label { font-size: 0.82em; color: var(--muted); }
.card-value { font-size: 1.35em; font-weight: 650; }
.grid { stroke: #e3e3e3; }
.axis { stroke: #555; fill: none; }
.frame { stroke: #555; fill: none; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(430px, 1fr)); gap: 8px 18px; }
figure { margin: 0.4em 0 0.8em; break-inside: avoid; }
figcaption { font-size: 0.9em; color: var(--muted); }
svg text { font-size: 12px; fill: #222; font-family: inherit; }
svg text.small { font-size: 10.5px; }
svg text.on-dark { fill: #fff; font-weight: 700; paint-order: stroke; stroke: #0008; stroke-width: 2px; }
svg.chart, svg.band { max-width: 100%; height: auto; display: block; }
svg.confusion { max-width: 100%; height: auto; display: block; }
.mark { stroke: #222; stroke-dasharray: 3 3; }
.mark-ring { fill: none; stroke: #222; stroke-width: 1.5; }
svg text.mark-label { font-weight: 600; }
rect.diag { stroke: #0b3; stroke-width: 1; }
ul.legend { list-style: none; padding: 0; margin: 2px 0 0; display: flex; flex-wrap: wrap; gap: 2px 16px;
  font-size: 0.9em; }
ul.legend li { display: flex; align-items: center; gap: 4px; }
.swatch { flex: none; }
.table-wrap { overflow: auto; max-height: 520px; margin: 0.4em 0 0.8em; border: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
caption { text-align: left; padding: 4px 6px; color: var(--muted); caption-side: top; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: var(--head); position: sticky; top: 0; z-index: 1; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
th button { font: inherit; font-weight: 650; background: none; border: 0; padding: 0; cursor: pointer; color: inherit;
  text-align: inherit; white-space: nowrap; }
td.num { white-space: nowrap; }
th button:focus-visible { outline: 2px solid var(--accent); }
th .arrow::after { content: " ↕"; color: #999; }
th[aria-sort=ascending] .arrow::after { content: " ▲"; color: var(--fg); }
th[aria-sort=descending] .arrow::after { content: " ▼"; color: var(--fg); }
.warn { border-left: 4px solid #D55E00; background: #fff4ec; padding: 6px 10px; }
section.run { margin-top: 2em; }
footer { margin-top: 3em; font-size: 0.85em; color: var(--muted); }
@media (max-width: 700px) { body { padding: 10px; } .charts { grid-template-columns: 1fr; } nav ul { columns: 1; } }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .table-wrap { max-height: none; overflow: visible; border: 0; }
  th { position: static; }
  th .arrow::after { content: ""; }
  table { font-size: 8.5pt; }
  th button { white-space: normal; }
  nav { display: none; }
  h2, h3, h4 { break-after: avoid; }
  tr, figure, .cards, .table-wrap.short { break-inside: avoid; }
  .charts { display: block; }
  svg.chart { width: 125mm; }
  section.run { break-before: page; }
  section.run:first-of-type { break-before: auto; }
}
"""

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  var heads = t.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, i) {
    th.querySelector("button").addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var num = th.dataset.type === "num", body = t.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows).map(function (r, n) {
        var c = r.cells[i], v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
        return { r: r, n: n, empty: v === "", v: num ? parseFloat(v) : v.toLowerCase() };
      });
      rows.sort(function (a, b) {
        if (a.empty || b.empty) { return a.empty === b.empty ? a.n - b.n : (a.empty ? 1 : -1); }
        var d = num ? a.v - b.v : a.v.localeCompare(b.v);
        return (asc ? d : -d) || a.n - b.n;
      });
      rows.forEach(function (x) { body.appendChild(x.r); });
    });
  });
});
"""


def page(title: str, body: str, footer: str) -> str:
    """The whole document: one file, inline CSS and script, no external reference."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        + page_defs()
        + body
        + f"<footer>{footer}</footer><script>{SCRIPT}</script></body></html>\n"
    )
