"""A static HTML report of one evaluation: what was run, the means, per-image rows that sort, pictures
and convergence plots.

:func:`write_html_report` writes ``index.html`` into a folder that also holds the run's pictures
(comparison panels from :mod:`converge.panel`, named by ``pictures``). The page needs no server and no
network: open it from disk. A click on a column heading sorts the rows (again: the other way), and the
address ``index.html#sort=psnr`` (``#sort=-psnr``: descending) opens it sorted. An iterative restorer's
residual (or relative change) per iteration is drawn as an inline SVG on a log scale, and, for one
that iterates on the image (plug-and-play), the PSNR of each iterate on a linear one.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from converge.atomic import write_text_atomic
from converge.eval.report import BenchmarkReport, ImageScore

PLOT_WIDTH, PLOT_HEIGHT = 220, 70
_NAME_CLASS = ' class="name"'

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: middle; }
th { background: #f0f0f0; }
#images th { cursor: pointer; user-select: none; }
#images th[data-order="ascending"]::after { content: " \\25B2"; }
#images th[data-order="descending"]::after { content: " \\25BC"; }
td.name, th.name { text-align: left; }
img.picture { width: 360px; }
code { background: #f6f6f6; padding: 1px 3px; }
"""

_SCRIPT = """
function sortBy(key, descending) {
  const headers = [...document.querySelectorAll('#images thead th')];
  const column = headers.findIndex(th => th.dataset.key === key);
  if (column < 0) return;
  const body = document.querySelector('#images tbody');
  const value = row => {
    const text = row.cells[column].dataset.value;
    const number = parseFloat(text);
    return text === '' ? null : isNaN(number) ? text : number;
  };
  const rows = [...body.rows].sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  });
  rows.forEach(row => body.appendChild(row));
  headers.forEach(th => delete th.dataset.order);
  headers[column].dataset.order = descending ? 'descending' : 'ascending';
  document.body.dataset.sortedBy = (descending ? '-' : '') + key;
}
document.querySelectorAll('#images thead th').forEach(th => {
  th.addEventListener('click', () => sortBy(th.dataset.key, th.dataset.order === 'ascending'));
});
window.addEventListener('load', () => {
  const shown = [...document.images].filter(image => image.complete && image.naturalWidth > 0);
  document.body.dataset.picturesShown = shown.length;
  const wanted = /^#sort=(-?)(.+)$/.exec(location.hash);
  if (wanted) sortBy(wanted[2], wanted[1] === '-');
});
"""

_COLUMNS = (
    ("image", "image"),
    ("picture", "input | output | reference"),
    ("psnr", "PSNR (dB)"),
    ("ssim", "SSIM"),
    ("input_psnr", "input PSNR"),
    ("gain", "gain (dB)"),
    ("seconds", "seconds"),
    ("iterations", "iterations"),
    ("residual", "residual per iteration"),
    ("psnr_trace", "PSNR per iteration"),
)


def write_html_report(
    folder: str | Path,
    report: BenchmarkReport,
    pictures: Mapping[str, str],
    traces: Mapping[str, Mapping[str, Sequence[float]]],
) -> Path:
    """Write ``folder/index.html`` (atomically) for ``report``.

    ``pictures`` maps an image's name to its picture's path relative to ``folder``; ``traces`` maps it
    to its per-iteration ``"residual"`` and ``"psnr"`` values (either may be empty). An image with
    neither (scored by an interrupted run and taken from its checkpoint) gets a row without them.
    Returns the page's path.
    """
    folder = Path(folder)
    title = f"{report.model} on {report.bench}: {report.task}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _protocol(report),
        "<h2>Means</h2>",
        _summary(report),
        "<h2>Images</h2>",
        "<p>Click a column heading to sort by it; click again for the other order.</p>",
        _image_table(report.rows, pictures, traces),
    ]
    page = (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(folder / "index.html", page)


def _protocol(report: BenchmarkReport) -> str:
    """What was run: the task and its parameters, the command and the weights' digest."""
    parameters = ", ".join(f"{key} {value}" for key, value in report.task_params.items()) or "none"
    items = [
        ("model", report.model),
        ("set", report.bench),
        ("task", f"{report.task} ({parameters})"),
        ("command", report.protocol.get("command") or "-"),
        ("weights SHA-256", report.protocol.get("weights_sha256") or "-"),
    ]
    listed = "".join(f"<li>{name}: <code>{html.escape(str(value))}</code></li>" for name, value in items)
    return f"<ul>{listed}</ul>"


def _summary(report: BenchmarkReport) -> str:
    """The means over the images as one table row."""
    summary = report.summary()
    cells = [("images", str(summary["images"]))]
    cells += [(label, _number(summary[key], digits)) for key, label, digits in (
        ("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4), ("input_psnr", "input PSNR", 2), ("seconds", "seconds", 2))]
    iterations = [row.iterations for row in report.rows if row.iterations is not None]
    if iterations:
        cells.append(("iterations", _number(sum(iterations) / len(iterations), 2)))
    head = "".join(f"<th>{label}</th>" for label, _ in cells)
    row = "".join(f"<td>{value}</td>" for _, value in cells)
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody></table>'


def _image_table(
    rows: Sequence[ImageScore], pictures: Mapping[str, str], traces: Mapping[str, Mapping[str, Sequence[float]]]
) -> str:
    """One row per image, each cell carrying the value it sorts by."""
    head = "".join(
        f'<th data-key="{key}"{_NAME_CLASS if key == "image" else ""}>{label}</th>' for key, label in _COLUMNS
    )
    lines = [f'<table id="images"><thead><tr>{head}</tr></thead><tbody>']
    for row in rows:
        gain = row.psnr - row.input_psnr
        picture = pictures.get(row.image)
        shown = (
            f'<a href="{html.escape(picture)}"><img class="picture" src="{html.escape(picture)}" '
            f'alt="{html.escape(row.image)}"></a>'
            if picture
            else "(kept from an interrupted run)"
        )
        residual = (traces.get(row.image) or {}).get("residual") or ()
        psnrs = (traces.get(row.image) or {}).get("psnr") or ()
        cells = [
            (row.image, html.escape(row.image)),
            (row.image, shown),
            (row.psnr, _number(row.psnr, 2)),
            (row.ssim, _number(row.ssim, 4)),
            (row.input_psnr, _number(row.input_psnr, 2)),
            (gain, _number(gain, 2)),
            (row.seconds, _number(row.seconds, 2)),
            (row.iterations, _number(row.iterations, 2)),
            (residual[-1] if residual else None, _plot(residual, log=True)),
            (max(psnrs) if psnrs else None, _plot(psnrs, log=False)),
        ]
        tds = "".join(
            f'<td data-value="{_sort_value(value)}"{_NAME_CLASS if index == 0 else ""}>{content}</td>'
            for index, (value, content) in enumerate(cells)
        )
        lines.append(f"<tr>{tds}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _plot(values: Sequence[float], *, log: bool) -> str:
    """An inline SVG of ``values`` per iteration (``log``: on a log scale, positive values only), with
    its first and last value; ``-`` for fewer than two."""
    finite = [value for value in values if math.isfinite(value) and (value > 0 or not log)]
    if len(finite) < 2:
        return "-"
    heights = [math.log10(value) for value in finite] if log else list(finite)
    low, high = min(heights), max(heights)
    span = (high - low) or 1.0
    step = PLOT_WIDTH / (len(heights) - 1)
    points = " ".join(
        f"{index * step:.1f},{4 + (high - value) / span * (PLOT_HEIGHT - 8):.1f}" for index, value in enumerate(heights)
    )
    shown = "{:.1e}" if log else "{:.2f} dB"
    caption = f"{shown.format(finite[0])} to {shown.format(finite[-1])} in {len(finite)}"
    colour = "#c33" if log else "#36c"
    return (
        f'<svg class="convergence" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" role="img">'
        f"<title>{caption}</title>"
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/></svg>'
        f"<br><small>{caption}</small>"
    )


def _number(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _sort_value(value: float | str | None) -> str:
    """The text a cell sorts by: the number itself, or an empty text (sorted as text) when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return html.escape(str(value))
