"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only, no driver package).

`render(path)` opens a local HTML file in a fresh headless Chromium, waits for the load event,
and returns what the page did: console errors and uncaught exceptions, the rendered size of
every figure (``svg`` and ``img`` elements, nested ``svg`` parts excluded), the page size, and a
PNG screenshot. Chromium is started with ``--remote-debugging-pipe``: commands go to its fd 3 and
replies come from its fd 4, one JSON message per NUL-terminated chunk, so no port and no
websocket library are needed.

Run as a script to screenshot a report::

    python tests/chromium.py report.html docs/report.png [--height 2300]
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["find_chromium", "render", "BrowserError"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe"]

FIGURES_JS = """JSON.stringify({
  figures: Array.from(document.querySelectorAll('svg, img')).filter(e => !e.parentElement.closest('svg')).map(e => {
    const r = e.getBoundingClientRect();
    return {tag: e.tagName.toLowerCase(), cls: e.getAttribute('class') || '', width: r.width, height: r.height};
  }),
  width: Math.ceil(document.documentElement.scrollWidth),
  height: Math.ceil(document.documentElement.scrollHeight),
  title: document.title,
})"""


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer in time."""


def find_chromium() -> Optional[str]:
    """The path of a Chromium (or Chrome) binary, or ``None``; ``$CHROMIUM`` wins when set."""
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome", "chrome"]
    for name in filter(None, names):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    """One DevTools session over Chromium's pipe: send commands, collect events."""

    def __init__(self, binary: str, profile: str):
        to_browser_r, self._out = os.pipe()  # we write commands to fd 3 of the browser
        self._in, from_browser_w = os.pipe()  # the browser writes replies to its fd 4
        # move the browser's ends above 4 so that placing them at 3 and 4 cannot overwrite one another
        high_r, high_w = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        to_browser_r, from_browser_w = high_r, high_w

        def child_fds():  # runs in the child before the fds outside pass_fds are closed
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_fds, pass_fds=(3, 4),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict] = []

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None, timeout: float = 30) -> dict:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            os.write(self._out, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


def render(path: str | Path, *, width: int = 1280, screenshot_height: Optional[int] = None,
           binary: Optional[str] = None, timeout: float = 60) -> dict:
    """Load ``path`` in headless Chromium and report what happened.

    Returns a dict with ``errors`` (console errors, uncaught exceptions, failed loads),
    ``figures`` (tag, class and rendered width/height of each top-level ``svg``/``img``),
    ``width``/``height`` (the page's scroll size), ``title`` and ``png`` (a screenshot of the
    whole page, or of its top ``screenshot_height`` pixels).
    """
    binary = binary or find_chromium()
    if binary is None:
        raise BrowserError("no Chromium found (install the Debian package `chromium`, or set $CHROMIUM)")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="scrub-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            nav = pipe.send("Page.navigate", {"url": url}, session=session)
            errors = [f"navigation failed: {nav['errorText']}"] if nav.get("errorText") else []
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            value = pipe.send("Runtime.evaluate", {"expression": FIGURES_JS, "returnByValue": True},
                              session=session)["result"]["value"]
            page = json.loads(value)
            height = page["height"] if screenshot_height is None else min(page["height"], screenshot_height)
            shot = pipe.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": page["width"], "height": height, "scale": 1},
            }, session=session, timeout=timeout)
        finally:
            pipe.close()
    for e in pipe.events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            errors.append("exception: " + str(params.get("exceptionDetails", {}).get("exception", {}).get("description")
                                              or params.get("exceptionDetails", {}).get("text")))
        elif e.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append("log: " + str(params["entry"].get("text")) + " " + str(params["entry"].get("url", "")))
    return {**page, "errors": errors, "png": base64.b64decode(shot["data"])}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Screenshot an HTML file in headless Chromium.")
    parser.add_argument("html")
    parser.add_argument("png")
    parser.add_argument("--height", type=int, default=None, help="capture only the top HEIGHT pixels")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    out = render(args.html, width=args.width, screenshot_height=args.height)
    Path(args.png).write_bytes(out["png"])
    print(f"{args.png}: page {out['width']}x{out['height']}, {len(out['figures'])} figures, errors: {out['errors'] or 'none'}")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
