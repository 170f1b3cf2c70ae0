"""The HTML report: its rows, pictures and plots as written, and the page in a real headless browser."""

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from converge.eval.html_report import _plot, write_html_report
from converge.eval.report import BenchmarkReport, ImageScore
from converge.panel import compare_panel, write_panel

SCORES = {"a": 28.5, "b": 31.25, "c": 25.0}


class _Rows(HTMLParser):
    """The ``data-value`` of every cell of the per-image table, row by row, and the images' sources."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.sources: list[str] = []
        self._in_images = self._in_body = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self._in_images = attributes.get("id") == "images"
        elif self._in_images and tag == "tbody":
            self._in_body = True
        elif self._in_images and self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_images and tag == "td":
            self.rows[-1].append(attributes["data-value"])
        elif tag == "img":
            self.sources.append(attributes["src"])


def _report(folder: Path, pictured: tuple[str, ...] = ("a", "b", "c")) -> Path:
    """A report of three images, with pictures and residuals for ``pictured``."""
    rows = [
        ImageScore(image=name, psnr=score, ssim=score / 40, input_psnr=20.0, seconds=1.5, iterations=12.0)
        for name, score in SCORES.items()
    ]
    report = BenchmarkReport("admm", "set12", "deblur", {"blur_sigma": 1.6}, {"command": "converge eval ..."}, rows)
    pictures, traces = {}, {}
    for index, name in enumerate(pictured):
        image = torch.full((1, 1, 32, 32), 0.2 * (index + 1))
        write_panel(folder / "images" / f"{name}.png", compare_panel(image, image, image))
        pictures[name] = f"images/{name}.png"
        traces[name] = {"residual": [10.0 ** -k for k in range(1, 6)], "psnr": [20.0, 24.0, 25.5]}
    return write_html_report(folder, report, pictures, traces)


def test_the_page_holds_one_row_per_image_with_its_values_and_picture(tmp_path):
    page = _report(tmp_path)
    parsed = _Rows()
    parsed.feed(page.read_text())
    assert [row[0] for row in parsed.rows] == list(SCORES)
    assert [float(row[2]) for row in parsed.rows] == list(SCORES.values())
    assert [float(row[5]) for row in parsed.rows] == [score - 20.0 for score in SCORES.values()]
    assert parsed.sources == [f"images/{name}.png" for name in SCORES]
    assert page.read_text().count("<polyline") == 6 and "20.00 dB to 25.50 dB in 3" in page.read_text()


def test_a_row_without_a_picture_says_why_and_sorts_last(tmp_path):
    page = _report(tmp_path, pictured=("a",))
    text = page.read_text()
    assert text.count("kept from an interrupted run") == 2 and text.count("<polyline") == 2
    parsed = _Rows()
    parsed.feed(text)
    assert [row[8] for row in parsed.rows][1:] == ["", ""]


def test_a_plot_needs_two_values_positive_ones_on_a_log_scale():
    assert _plot([], log=True) == "-" and _plot([0.5], log=True) == "-" and _plot([0.0, -1.0], log=True) == "-"
    assert _plot([0.0, -1.0], log=False) != "-"
    svg = _plot([1e-1, 1e-2, 1e-3], log=True)
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    heights = [float(point.split(",")[1]) for point in points]
    assert heights == sorted(heights) and "1.0e-01 to 1.0e-03 in 3" in svg


def _browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("no chromium here: `apt-get install chromium` (make test installs it where it may)")
    return found


def _rendered(browser: str, url: str) -> str:
    """The page's DOM after its scripts ran, from a headless browser."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def _order(dom: str) -> list[str]:
    parsed = _Rows()
    parsed.feed(dom)
    return [row[0] for row in parsed.rows]


def test_the_page_renders_in_a_browser_with_its_pictures_and_sorts(tmp_path):
    browser = _browser()
    page = _report(tmp_path)
    dom = _rendered(browser, page.as_uri())
    assert 'data-pictures-shown="3"' in dom and _order(dom) == list(SCORES)
    assert _order(_rendered(browser, page.as_uri() + "#sort=-psnr")) == ["b", "a", "c"]
    # The headings' own click handlers: PSNR once (ascending), then again (descending).
    clicked = tmp_path / "clicked.html"
    clicks = (
        "<script>window.addEventListener('load', () => { const th = document.querySelector('th[data-key=psnr]');"
        " th.click(); document.body.dataset.first = [...document.querySelectorAll('#images tbody tr')]"
        ".map(row => row.cells[0].dataset.value).join(','); th.click(); });</script>"
    )
    clicked.write_text(page.read_text().replace("</body>", clicks + "</body>"))
    dom = _rendered(browser, clicked.as_uri())
    assert 'data-first="c,a,b"' in dom and _order(dom) == ["b", "a", "c"] and 'data-order="descending"' in dom
