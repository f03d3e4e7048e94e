"""The ``scrub`` command: --version, duplicate hypothesis names, output paths checked before any
forward pass, each output written on its own (a write error is one line and exit code 2), and the
line and traceback of an exception raised while a hypothesis file is imported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import scrub
from scrub.cli import main
from scrub.hypfile import HypothesisFileError, load_hypothesis_file

# a tiny random model built in the file itself (fast; no zoo model)
TINY_FILE = '''
import torch
import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis

CALLS = []

def model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    CALLS.append("model")
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=10, n_ctx=8, act_fn=None,
                                  attn_only=True, normalization_type="LN", device="cpu", seed=0)
    return HookedTransformer(cfg).eval()

def dataset():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 10, (24, 6), generator=g)
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens[:, 1:]
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, -1] = False
    return scrub.Dataset(tokens=tokens, targets=targets, loss_mask=mask, name="tiny")

def hypotheses():
    a = Hypothesis("embed exact")
    a.claim(Embed(), EXACT, into=a.output())
    b = Hypothesis("head by token")
    b.claim(Head(0, 0), Feature.token(), into=b.output())
    return [a, b]
'''


@pytest.fixture()
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny_hyps.py"
    path.write_text(TINY_FILE)
    return path


def _lines(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("scrub: error: ") for line in lines) and "Traceback" not in err, err
    return lines


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"scrub {scrub.__version__}"


@pytest.mark.parametrize("command", ["run", "compare"])
@pytest.mark.requires_hooked  # its hypothesis file builds a HookedTransformer
def test_duplicate_hypothesis_names_are_refused(command, tiny, capsys):
    tiny.write_text(TINY_FILE.replace('Hypothesis("head by token")', 'Hypothesis("embed exact")'))
    assert main([command, str(tiny), "--quick"] if command == "run" else [command, str(tiny)]) == 2
    (line,) = _lines(capsys.readouterr().err)
    assert "names must be distinct" in line and "'embed exact'" in line


def _forbid_model(monkeypatch):
    """Make the file's model() unusable: a refused path must stop the command before it."""
    import scrub.hypfile as hypfile

    original = hypfile.load_hypothesis_file

    def load(path):
        spec = original(path)

        def model():
            raise AssertionError("model() was called")

        import attrs

        return attrs.evolve(spec, model=model)

    monkeypatch.setattr(hypfile, "load_hypothesis_file", load)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere; chmod cannot refuse it")
def test_unwritable_folder_is_refused_before_running(tiny, tmp_path, monkeypatch, capsys):
    _forbid_model(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["run", str(tiny), "--quick", "--json", str(locked / "out.json")]) == 2
    finally:
        locked.chmod(0o700)
    (line,) = _lines(capsys.readouterr().err)
    assert "--json" in line and "not writable" in line


def test_unwritable_paths_are_refused_before_running(tiny, tmp_path, monkeypatch, capsys):
    """The same check with the permission answer simulated (so it runs as root too)."""
    _forbid_model(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    assert main(["compare", str(tiny), "--html", str(locked / "deep" / "out.html")]) == 2
    (line,) = _lines(capsys.readouterr().err)
    assert "--html" in line and "not writable" in line and str(locked) in line
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["run", str(tiny), "--json", str(a_file / "out.json")]) == 2
    assert "is not a directory" in _lines(capsys.readouterr().err)[0]
    assert main(["run", str(tiny), "--json", str(tmp_path / "same"), "--html", str(tmp_path / "same")]) == 2
    assert "the same file" in _lines(capsys.readouterr().err)[0]


@pytest.mark.parametrize("failing", ["--json", "--html"])
@pytest.mark.parametrize("command", ["quick", "run", "compare"])
@pytest.mark.requires_hooked  # its hypothesis file builds a HookedTransformer
def test_a_failed_write_does_not_lose_the_other_file(failing, command, tiny, tmp_path, monkeypatch, capsys):
    import scrub.reporting.files as files

    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    bad = out_json if failing == "--json" else out_html
    real_write = files.write_text

    def write_text(path, text):
        if Path(path) == bad:
            raise OSError(28, "No space left on device")
        return real_write(path, text)

    monkeypatch.setattr(files, "write_text", write_text)
    argv = {"quick": ["run", str(tiny), "--quick"], "run": ["run", str(tiny)], "compare": ["compare", str(tiny)]}[command]
    code = main(argv + ["--n", "12", "--seeds", "1", "--no-progress", "--json", str(out_json), "--html", str(out_html)])
    captured = capsys.readouterr()
    assert code == 2
    (line,) = _lines(captured.err)
    assert line == (f"scrub: error: cannot write {failing} {str(bad)!r}: No space left on device; "
                    f"the other outputs were still written")
    good = out_html if failing == "--json" else out_json
    assert good.exists() and not bad.exists()
    if good == out_json:
        assert json.loads(out_json.read_text())["kind"] in ("scrub.run", "scrub.comparison")
    else:
        assert "<html" in out_html.read_text().lower()


def test_import_error_keeps_the_files_line_and_traceback(tmp_path, capsys):
    path = tmp_path / "raises.py"
    path.write_text("import math\n\n\ndef helper():\n    return math.sqrt(-1)\n\n\nVALUE = helper()\n")
    with pytest.raises(HypothesisFileError) as info:
        load_hypothesis_file(path)
    err = info.value
    assert f"{path} at line 5 ('return math.sqrt(-1)')" in str(err)
    assert "ValueError: math domain error" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert f'File "{path}", line 8, in <module>' in err.file_traceback
    assert f'File "{path}", line 5, in helper' in err.file_traceback
    assert "importlib" not in err.file_traceback  # the import machinery's frames are left out
    assert main(["run", str(path)]) == 2
    (line,) = _lines(capsys.readouterr().err)
    assert "at line 5" in line


def test_syntax_error_names_its_line(tmp_path):
    path = tmp_path / "syntax.py"
    path.write_text("x = 1\ndef f(:\n    pass\n")
    with pytest.raises(HypothesisFileError, match=r"at line 2 \('def f\(:'\).*SyntaxError"):
        load_hypothesis_file(path)


def test_metric_choices_include_every_named_metric(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("cross_entropy", "cross_entropy_tokens", "accuracy", "kl", "logit_diff", "target_logit", "squared_error"):
        assert name in out
