"""The quick-start demo: scrub the induction hypotheses on the bundled zoo model.

Run ``make demo`` (or ``python -m scrub.demo [FILE] [--n ROWS] [--seeds K]``). It loads
``hypotheses/induction.py``, evaluates every hypothesis there on ``induction-2l`` and prints
loss recovered with standard errors and confidence intervals.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scrub.api import evaluate_many
from scrub.errors import ScrubError
from scrub.hypfile import load_hypothesis_file
from scrub.model import model_name
from scrub.options import RunOptions
from scrub.reporting.terminal import format_table, num, pct

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "hypotheses" / "induction.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scrub.demo", description=__doc__)
    parser.add_argument("file", nargs="?", default=str(DEFAULT_FILE), help="hypothesis file")
    parser.add_argument("--n", type=int, default=1024, help="reference rows (default 1024)")
    parser.add_argument("--seeds", type=int, default=2, help="sampling seeds (default 2)")
    args = parser.parse_args(argv)
    try:
        options = RunOptions(seeds=args.seeds, n=args.n)  # checked before anything is loaded
        spec = load_hypothesis_file(args.file)
        model, data = spec.model(), spec.dataset()
        print(f"model: {model_name(model)}; dataset: {data!r}")
        rows = []
        start = time.perf_counter()
        hypotheses = list(spec.hypotheses())
        # one call: the hypotheses share the reference rows, seeds, baseline and clean pass
        results = evaluate_many(hypotheses, model, data, options=options)
        for h, r in zip(hypotheses, results):
            lo, hi = r.ci
            rows.append([h.name, pct(r.loss_recovered), pct(r.stderr, 2), f"[{pct(lo)}, {pct(hi)}]", num(r.m_scrub)])
        first = results[0]
        print()
        print(format_table(
            ["hypothesis", "loss recovered", "SE", f"{int(100 * first.ci_level)}% CI", first.metric],
            rows,
            title=(
                f"{first.n_rows} reference rows, seeds {list(first.seeds)}; {first.metric}: model "
                f"{num(first.m_model)}, baseline ({first.baseline}) {num(first.m_base)}"
            ),
        ))
        print(f"\n{len(rows)} hypotheses in {time.perf_counter() - start:.1f} s (engine: {first.engine})")
    except ScrubError as exc:
        print(f"scrub: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
