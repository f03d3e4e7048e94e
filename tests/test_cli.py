"""The ``scrub`` command end to end, in-process (`scrub.cli.main`), on the zoo model with few rows.

Exit codes are the contract: 0 success, 2 usage error or ScrubError (one line, no traceback),
1 anything unexpected (with the traceback).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

import scrub
import scrub.zoo
from scrub.cli import main
from scrub.hypfile import load_hypothesis_file

ROOT = Path(__file__).resolve().parent.parent
INDUCTION_FILE = ROOT / "hypotheses" / "induction.py"

SMALL_FILE = '''
import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis

def model():
    return scrub.zoo.load("induction-2l")

def dataset():
    return scrub.tasks.induction(n=96, seed=0)

def datasets():
    return {"induction": dataset(),
            "short repeats": scrub.tasks.induction(n=96, seed=2, min_period=3, max_period=6, name="induction-short")}

def hypotheses():
    a = Hypothesis("two heads")
    out = a.output()
    a.claim(Head(1, 0), EXACT, into=out)
    a.claim(Head(1, 1), EXACT, into=out)
    b = Hypothesis("head 1.0 naive")
    out = b.output()
    ind = b.claim(Head(1, 0), EXACT, into=out)
    b.claim(Embed(), Feature.token(), into=(ind, "q"))
    b.claim(Head(0, 3), Feature.prev_token(), into=(ind, "k"))
    return [a, b]
'''


@pytest.fixture(scope="module", autouse=True)
def _cached_zoo():
    """Load the zoo model once for the module (each run would otherwise rebuild it)."""
    original = scrub.zoo.load
    cache: dict = {}

    def load(name, device=None):
        if name not in cache:
            cache[name] = original(name)
        return cache[name] if device is None else cache[name].to(device)

    scrub.zoo.load = load
    yield
    scrub.zoo.load = original


@pytest.fixture()
def small(tmp_path) -> Path:
    path = tmp_path / "small_hyps.py"
    path.write_text(SMALL_FILE)
    return path


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("scrub: error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.zoo_api
def test_quick_run_of_the_induction_file(capsys, tmp_path):
    out_json = tmp_path / "quick.json"
    code = main(["run", str(INDUCTION_FILE), "--quick", "--n", "64", "--seeds", "1", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 0, err
    names = [h.name for h in load_hypothesis_file(INDUCTION_FILE).hypotheses()]
    for name in names:
        assert name in out
    assert "loss recovered" in out and "64 reference rows" in out
    assert "scrubbing" in err  # progress bars are on by default, on stderr
    data = json.loads(out_json.read_text())
    assert data["kind"] == "scrub.run" and data["quick"] is True
    assert [r["hypothesis"] for r in data["results"]] == names
    assert data["meta"]["seeds"] == [0] and data["meta"]["reference_rows"] == 64


@pytest.mark.zoo_api
def test_full_run_writes_json_and_html(small, tmp_path, capsys):
    out_json, out_html = tmp_path / "out" / "run.json", tmp_path / "run.html"
    code = main(["run", str(small), "--n", "32", "--seeds", "1", "--no-progress", "--device", "cpu",
                 "--json", str(out_json), "--html", str(out_html)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("Report for") == 2 and "Generality" in out and "Moving model" not in out
    assert "scrubbing" not in err  # --no-progress
    data = json.loads(out_json.read_text())
    assert data["kind"] == "scrub.run" and [r["kind"] for r in data["reports"]] == ["scrub.report"] * 2
    assert [r["hypothesis"] for r in data["reports"]] == ["two heads", "head 1.0 naive"]
    for r in data["reports"]:
        assert [g["dataset"] for g in r["generality"]] == ["induction", "short repeats"]
        assert r["meta"]["seeds"] == [0] and r["full"]["n_rows"] == 32
    page = out_html.read_text()
    assert "two heads" in page and "head 1.0 naive" in page and page.count('<svg class="dag"') == 2
    assert "<script" not in page


@pytest.mark.zoo_api
def test_metric_option(small, capsys):
    code = main(["run", str(small), "--quick", "--n", "32", "--seeds", "1", "--metric", "accuracy", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "accuracy" in out


@pytest.mark.zoo_api
def test_the_file_can_name_its_metric(small, tmp_path, capsys):
    named = tmp_path / "named_metric.py"
    named.write_text(small.read_text() + '\nMETRIC = "accuracy"\n')
    code = main(["run", str(named), "--quick", "--n", "32", "--seeds", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "accuracy" in out
    code = main(["run", str(named), "--quick", "--n", "32", "--seeds", "1", "--metric", "cross_entropy", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and "cross_entropy" in out and "accuracy" not in out  # the option wins
    bad = tmp_path / "bad_metric.py"
    bad.write_text(small.read_text() + '\nMETRIC = "nonsense"\n')
    code = main(["run", str(bad), "--quick", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and "METRIC = 'nonsense'" in err and "Traceback" not in err


@pytest.mark.zoo_api
def test_compare(small, tmp_path, capsys):
    out_json, out_html = tmp_path / "cmp.json", tmp_path / "cmp.html"
    code = main(["compare", str(small), "--n", "32", "--seeds", "1", "--json", str(out_json), "--html", str(out_html)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Comparison on 32 rows" in out and "Paired differences" in out
    data = json.loads(out_json.read_text())
    assert data["kind"] == "scrub.comparison" and len(data["results"]) == 2 and len(data["differences"]) == 1
    assert "Paired differences" in out_html.read_text()


BAD_FILES = {
    "syntax error": ("def model(:\n    pass\n", "SyntaxError"),
    "missing model()": ("import scrub\ndef dataset():\n    return scrub.tasks.induction(n=32)\nHYPOTHESES = []\n", "model()"),
    "claim on a head the model lacks": (SMALL_FILE.replace("Head(1, 1), EXACT", "Head(5, 1), EXACT"), "Head(5.1)"),
    "claim into a port the head lacks": (SMALL_FILE.replace('into=(ind, "q")', 'into=(ind, "z")'), "z"),
    "empty hypothesis list": (SMALL_FILE.replace("return [a, b]", "return []"), "non-empty"),
}


@pytest.mark.parametrize("case", [  # a head the model lacks is found by reading the zoo model
    pytest.param(c, marks=pytest.mark.zoo_api) if c == "claim on a head the model lacks" else c for c in sorted(BAD_FILES)
])
def test_bad_hypothesis_file_exits_2_with_one_line(case, tmp_path, capsys):
    text, needle = BAD_FILES[case]
    path = tmp_path / "bad.py"
    path.write_text(text)
    code = main(["run", str(path), "--quick", "--n", "16", "--seeds", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2
    assert needle in _one_line_error(err)


@pytest.mark.parametrize("argv, needle", [
    ([], "give a command"),
    (["run"], "file"),
    (["frobnicate", "x.py"], "invalid choice"),
    (["run", "missing_file.py"], "does not exist"),
    (["run", "x.py", "--seeds", "0"], "--seeds"),
    (["run", "x.py", "--n", "many"], "--n"),
    (["run", "x.py", "--metric", "bleu"], "--metric"),
    (["run", "x.py", "--device", "no-such-device"], "--device"),
    (["compare", "x.py", "--quick"], "unrecognized"),
])
def test_usage_errors_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in _one_line_error(capsys.readouterr().err)


def test_output_path_that_is_a_directory_is_refused_before_running(small, tmp_path, capsys):
    assert main(["run", str(small), "--html", str(tmp_path)]) == 2
    assert "directory" in _one_line_error(capsys.readouterr().err)


@pytest.mark.zoo_api
def test_compare_needs_two_hypotheses(tmp_path, capsys):
    path = tmp_path / "one.py"
    path.write_text(SMALL_FILE.replace("return [a, b]", "return [a]"))
    assert main(["compare", str(path), "--n", "16", "--seeds", "1", "--no-progress"]) == 2
    assert "at least two" in _one_line_error(capsys.readouterr().err)


def test_unexpected_error_exits_1_with_traceback(small, capsys):
    small.write_text(SMALL_FILE.replace('return scrub.zoo.load("induction-2l")', 'raise RuntimeError("boom in model()")'))
    assert main(["run", str(small), "--quick", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom in model()" in err


def test_help_documents_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "scrub: error:" in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--json", "--html", "--seeds", "--n", "--device", "--metric", "--no-progress"):
        assert option in out


def test_python_dash_m_scrub(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["scrub", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("scrub", run_name="__main__")
    assert exc.value.code == 0 and "exit codes" in capsys.readouterr().out
