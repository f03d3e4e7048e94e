"""Notebook display and figures of a `scrub.result.Result`, in one place.

`Result` sits below `scrub.reporting` in the package layering and never imports it: this module
registers these two functions with `scrub.result.register_presenters` when it loads (the
reporting package imports it). `Report` and `Comparison` live in `scrub.reporting.results` and
call `scrub.reporting.html` and `scrub.reporting.plot` directly.
"""

from __future__ import annotations

from scrub.result import register_presenters

__all__ = ["result_html", "result_figure"]


def result_html(data: dict) -> str:
    """A `Result.to_dict()` as an HTML fragment for a notebook cell (see `scrub.reporting.html`)."""
    from scrub.reporting.html import result_html as render

    return render(data)


def result_figure(data: dict):
    """A `Result.to_dict()` as a matplotlib `Figure` (see `scrub.reporting.plot`)."""
    from scrub.reporting.plot import plot_result  # matplotlib loads only when a figure is asked for

    return plot_result(data)


register_presenters(html=result_html, figure=result_figure)
