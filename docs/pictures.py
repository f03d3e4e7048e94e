"""Make the README's pictures: screenshots of scrub's HTML output taken by headless Chromium.

    python docs/pictures.py patching   # docs/patching.png: the heads-by-layer sweep (seconds)
    python docs/pictures.py report     # docs/report.png: the naive induction report (minutes)
    python docs/pictures.py            # both

Run from the repository root with the project's Python; Chromium comes from ``$CHROMIUM`` or
the ``PATH`` (tests/chromium.py drives it, as the browser test does). The HTML pages are written
to a temporary folder and removed.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's scrub, not another install's


def _screenshot(html: Path, png: Path, width: int, height: int) -> None:
    """tests/chromium.py's command line, as the README shows it for docs/report.png."""
    subprocess.run([sys.executable, str(ROOT / "tests" / "chromium.py"), str(html), str(png),
                    "--width", str(width), "--height", str(height)], check=True)


def patching(out: Path) -> None:
    """Denoising every head of the zoo's induction model (every position at once), drawn by
    `PatchingResult.to_html`: one layer-by-head heatmap."""
    from scrub.patching import activation_patch

    example = runpy.run_path(str(ROOT / "hypotheses" / "explore_induction.py"))
    result = activation_patch(example["model"](), example["dataset"](), "heads", direction="denoise")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "patching.html"
        page.write_text(result.to_html(title="Head outputs, denoised: induction-2l"))
        _screenshot(page, out, width=640, height=600)


def report(out: Path) -> None:
    """The top of the naive induction hypothesis's report."""
    import scrub

    m = runpy.run_path(str(ROOT / "hypotheses" / "induction.py"))
    rep = scrub.report(m["naive"](), m["model"](), m["dataset"](), seeds=1, n=128, datasets=m["datasets"]())
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        rep.to_html(str(page))
        _screenshot(page, out, width=1200, height=2300)


PICTURES = {"patching": (patching, "patching.png"), "report": (report, "report.png")}


def main(argv: list[str]) -> int:
    names = argv or list(PICTURES)
    unknown = [n for n in names if n not in PICTURES]
    if unknown:
        print(f"unknown picture(s) {unknown}; choose from {list(PICTURES)}", file=sys.stderr)
        return 2
    for name in names:
        make, file = PICTURES[name]
        make(ROOT / "docs" / file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
