"""The HTML report in a real browser: headless Chromium loads a report page, a run page and a
notebook fragment; each loads without console errors, every figure is drawn with a non-zero size
at its own width (none squeezed), and a screenshot is saved.

Chromium is driven over the DevTools protocol on a pipe (tests/chromium.py, stdlib only).
`.ci/run` installs the Debian package `chromium` when it is missing; where no browser can be had
these tests are skipped, saying so.
"""

from __future__ import annotations

import re

import pytest

import chromium
import report_values as V
from scrub.reporting.html import render_run

BROWSER = chromium.find_chromium()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on this machine (apt-get install chromium, or set $CHROMIUM to a Chrome binary)"
)


def _figures_in(page: str) -> list[tuple[float, float]]:
    """The declared width and height of each top-level figure of ``page``."""
    svgs = re.findall(r'<svg class="(?:bars|dag|heatmap|legend)"[^>]*\bwidth="([\d.]+)" height="([\d.]+)"', page)
    return [(float(w), float(h)) for w, h in svgs]


def _check(path, shot) -> dict:
    page = path.read_text(encoding="utf-8")
    out = chromium.render(path, binary=BROWSER)
    assert out["errors"] == [], out["errors"]
    declared = _figures_in(page)
    drawn = [f for f in out["figures"] if f["tag"] == "svg"]
    assert len(drawn) == len(declared) > 0
    for f, (w, h) in zip(drawn, declared):
        assert f["width"] > 0 and f["height"] > 0, f
        assert f["width"] == pytest.approx(w, abs=1) and f["height"] == pytest.approx(h, abs=1), (f, w, h)
    shot.write_bytes(out["png"])
    assert out["png"].startswith(b"\x89PNG") and len(out["png"]) > 10_000
    return out


def test_report_page_renders_in_chromium(tmp_path):
    path = V.report(long_labels=True).to_html(tmp_path / "report.html")
    out = _check(path, tmp_path / "report.png")
    assert out["title"] == "scrub report: two induction heads"
    assert 1000 < out["height"] < 12_000


def test_run_page_with_comparison_renders_in_chromium(tmp_path):
    path = tmp_path / "run.html"
    path.write_text(render_run([V.report().to_dict(), V.report("second").to_dict()], V.comparison().to_dict()),
                    encoding="utf-8")
    _check(path, tmp_path / "run.png")


def test_notebook_fragment_renders_in_chromium(tmp_path):
    """A notebook puts the fragment inside its own page: it must draw the same there."""
    path = tmp_path / "notebook.html"
    cells = V.report()._repr_html_() + V.comparison()._repr_html_() + V.result("one result", 0.7)._repr_html_()
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>notebook</title>"
                    f"<style>body{{font-size:13px}}</style></head><body>{cells}</body></html>", encoding="utf-8")
    _check(path, tmp_path / "notebook.png")
