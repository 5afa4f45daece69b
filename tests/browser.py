"""A headless-Chromium check of HTML pages, for the tests (the DevTools protocol over a pipe).

`browser_check` opens a page in headless Chromium over the DevTools protocol (a pipe, no
network port) and returns every console error, uncaught exception, failed load and request to
a non-local URL, plus a screenshot of the page and of one element. The report tests use it to
show that a report loads cleanly offline and that its 3-D view is actually drawn. Chromium is
found on PATH (`find_chromium`); Debian: `apt-get install -y chromium`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Offline-friendly flags that work as root on a server with no display. SwiftShader gives WebGL
# (plotly's 3-D views) without a GPU.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-quic", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
    "--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    """What a headless browser saw on a page."""

    console_errors: list[str] = field(default_factory=list)  # console.error/assert, uncaught exceptions, log errors
    external_requests: list[str] = field(default_factory=list)  # any URL not file:, data:, blob:, about:
    screenshot: bytes = b""  # PNG of the viewport
    element_screenshot: bytes | None = None  # PNG of the selected element (None: not found)
    element_found: bool = False
    drawn: bool = False  # the element held a canvas when the screenshot was taken
    messages: list[str] = field(default_factory=list)  # every console message, for diagnostics


def _high_fd(fd: int, minimum: int = 10) -> int:
    """A duplicate of `fd` numbered `minimum` or above (the original is closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return high


class _DevToolsPipe:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, executable: str, extra_flags: Sequence[str], profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # The child's ends are moved to fds 3 and 4; keep them clear of those numbers first.
        to_chrome_r, from_chrome_w = (_high_fd(fd) for fd in (to_chrome_r, from_chrome_w))
        command = [executable, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}",
                   "--remote-debugging-pipe", "about:blank"]

        def child_pipes():  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        # close_fds=False: the parent's own fds are close-on-exec anyway, and 3/4 must survive
        self.process = subprocess.Popen(command, preexec_fn=child_pipes, close_fds=False, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._from_chrome], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self._stderr_tail())
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "(Chromium still running)"
        if self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply is None:
                raise TimeoutError(f"DevTools: no answer to {method} within {timeout} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        for index, event in enumerate(self.events):
            if event["method"] == method:
                return event
        while True:
            event = self._read_message(deadline)
            if event is None:
                return None
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (event := self._read_message(deadline)) is not None:
            if "method" in event:
                self.events.append(event)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                os.write(self._to_chrome, json.dumps({"id": 10**9, "method": "Browser.close"}).encode() + b"\0")
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.process.stderr is not None:
                self.process.stderr.close()


def _evaluate(pipe: _DevToolsPipe, session: str, expression: str, timeout: float = 30.0) -> Any:
    result = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                       session, timeout)
    return result.get("result", {}).get("value")


def _remote_object_text(value: dict) -> str:
    if "value" in value:
        return str(value["value"])
    return value.get("description", value.get("type", "?"))


def browser_check(page: str | Path, selector: str | None = None, *, window: tuple[int, int] = (1280, 1000),
                  settle_timeout: float = 20.0, timeout: float = 60.0, executable: str | None = None) -> PageCheck:
    """Open `page` (a local HTML file) in headless Chromium and report what happened.

    Waits for the load event, then (with `selector`) until that element holds a drawn plotly
    figure (a canvas, and plotly's layout object) or `settle_timeout` passes; then two animation
    frames, then screenshots. Raises FileNotFoundError when no Chromium is on PATH.
    """
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install -y chromium)")
    url = Path(page).resolve().as_uri()
    check = PageCheck()
    with tempfile.TemporaryDirectory(prefix="sim-chromium-") as profile:
        pipe = _DevToolsPipe(executable, [f"--window-size={window[0]},{window[1]}"], profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
                pipe.send(method, session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False}, session)
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": url}, session)
            if pipe.wait_event("Page.loadEventFired", timeout) is None:
                check.console_errors.append(f"page did not finish loading within {timeout} s")
            if selector is not None:
                probe = (f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return 'missing';"
                         " const d = e.classList.contains('plotly-graph-div') ? e : e.querySelector('.plotly-graph-div');"
                         " return (d && d._fullLayout && e.querySelector('canvas')) ? 'drawn' : 'waiting'; })()")
                deadline = time.monotonic() + settle_timeout
                state = _evaluate(pipe, session, probe)
                while state == "waiting" and time.monotonic() < deadline:
                    pipe.pump(0.2)
                    state = _evaluate(pipe, session, probe)
                check.element_found = state != "missing"
                check.drawn = state == "drawn"
            _evaluate(pipe, session, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            pipe.pump(0.5)
            check.screenshot = base64.b64decode(
                pipe.send("Page.captureScreenshot", {"format": "png"}, session, timeout)["data"])
            if selector is not None and check.element_found:
                rect = _evaluate(pipe, session, (
                    f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                    " const r = e.getBoundingClientRect(); return {x: r.left + window.scrollX,"
                    " y: r.top + window.scrollY, width: r.width, height: r.height}; })()"))
                _evaluate(pipe, session, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                if rect and rect["width"] > 0 and rect["height"] > 0:
                    clip = {**rect, "scale": 1}
                    check.element_screenshot = base64.b64decode(
                        pipe.send("Page.captureScreenshot", {"format": "png", "clip": clip}, session, timeout)["data"])
            pipe.pump(0.2)
        finally:
            pipe.close()
    for event in pipe.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_object_text(arg) for arg in params.get("args", []))
            check.messages.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                check.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            check.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            check.messages.append(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".strip())
            if entry.get("level") == "error":
                check.console_errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if request_url.split(":", 1)[0] not in ("file", "data", "blob", "about"):
                check.external_requests.append(request_url)
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            check.console_errors.append(f"load failed: {params.get('errorText')}")
    return check
