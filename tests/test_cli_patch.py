"""`scrub patch FILE`: sweeps on a paired dataset, a proposal printed as code, files written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scrub.cli import main

FILE = Path(__file__).parent.parent / "hypotheses" / "explore_induction.py"
SMALL = '''
import runpy
m = runpy.run_path({file!r})
model = m["model"]
def dataset():
    return m["dataset"](n=24, seed=0)
'''


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("patch") / "explore_small.py"
    path.write_text(SMALL.format(file=str(FILE)))
    return path


def test_patch_prints_the_sweeps_and_a_proposal_and_writes_files(small_file, tmp_path, capsys):
    out = tmp_path / "explore"
    assert main(["patch", str(small_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "proposed hypothesis" in printed
    assert "Hypothesis(" in printed and ".claim(" in printed
    assert (out / "noise.html").exists() and (out / "denoise.json").exists()


def test_patch_refuses_a_bad_threshold_and_a_file_as_out_folder(small_file, tmp_path, capsys):
    assert main(["patch", str(small_file), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert main(["patch", str(small_file), "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
