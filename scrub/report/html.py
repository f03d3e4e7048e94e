"""HTML rendering (placeholder until the renderer lands): a minimal self-contained page."""

from __future__ import annotations

import html
import json

__all__ = ["render_report", "render_comparison"]


def render_report(data: dict) -> str:
    return f"<!doctype html><meta charset='utf-8'><title>scrub report</title><pre>{html.escape(json.dumps(data, indent=2))}</pre>"


def render_comparison(data: dict) -> str:
    return render_report(data)
