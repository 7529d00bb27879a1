"""A headless Chromium driven through its DevTools protocol over a pipe, for the browser tests
and ``examples/make_screenshots.py``: load a report or a page, click, evaluate script, screenshot.

``--remote-debugging-pipe``: no port is opened, no extra package is needed. Not part of the
package: users never need a browser to run ``tal``.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Self

from tal_pipeline.errors import NotAvailableError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$TAL_CHROMIUM``, else the first of
    :data:`CHROMIUM_NAMES` on ``PATH``; None when there is none."""
    env = os.environ.get("TAL_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """A headless Chromium driven through the DevTools protocol on a pipe (no port, no
    websocket, no network): Chromium reads commands on fd 3 and writes replies on fd 4,
    NUL-terminated JSON.

    Use as a context manager::

        with HeadlessChromium(width=1280, height=900) as b:
            b.navigate(Path("report.html").resolve().as_uri())
            b.evaluate("document.title")
            b.click(100, 200)
            b.screenshot("report.png")
    """

    FLAGS = (
        "--headless",
        "--no-sandbox",  # root in containers/CI; the page is our own file
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--mute-audio",
        "--hide-scrollbars",
        "--autoplay-policy=no-user-gesture-required",
    )

    def __init__(
        self, width: int = 1280, height: int = 900, binary: str | None = None, timeout: float = 30.0
    ):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise NotAvailableError("no Chromium found (install 'chromium' or set TAL_CHROMIUM)")
        self.width, self.height, self.timeout = width, height, timeout
        self._next_id = 0
        self._buf = b""
        self.events: list[dict] = []
        self._profile = tempfile.TemporaryDirectory(prefix="tal-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        args = [
            self.binary,
            *self.FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # posix_spawn (no fork of this possibly threaded process): our pipe ends become the
        # child's fds 3 and 4, stdio goes to /dev/null. Copies >= 10 make the dup2s collision-free.
        import fcntl

        a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        try:
            self.pid = os.posix_spawn(
                self.binary,
                args,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, a, 3),
                    (os.POSIX_SPAWN_DUP2, b, 4),
                ],
                setsid=True,  # its own process group: close() can end its helpers too
            )
        finally:
            for fd in (a, b, to_child_r, from_child_w):
                os.close(fd)
        self.returncode: int | None = None
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.send(
                "Target.attachToTarget", {"targetId": target, "flatten": True}
            )["sessionId"]
            self.send("Page.enable", session=True)
            self.send("Runtime.enable", session=True)
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=True,
            )
        except BaseException:
            self.close()
            raise

    # -- protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (code {self.poll()})")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one DevTools command and wait for its result (events seen meanwhile are kept)."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        """Wait for (and consume) the first event named ``method``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for k, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(k)
            msg = self._read_message(deadline)
            if "method" in msg:
                self.events.append(msg)

    # -- conveniences
    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, await_promise: bool = False):
        """Evaluate a JS expression in the page; returns its value (JSON-able)."""
        res = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            session=True,
        )
        if "exceptionDetails" in res:
            raise RuntimeError(
                f"JS error: {res['exceptionDetails'].get('text')}: "
                f"{res['exceptionDetails'].get('exception', {}).get('description')}"
            )
        return res.get("result", {}).get("value")

    def click(self, x: float, y: float) -> None:
        """A real left click at viewport pixel (x, y) (mouse moved, pressed, released)."""
        base = {"x": x, "y": y, "button": "left", "clickCount": 1}
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=True)
        self.send("Input.dispatchMouseEvent", {"type": "mousePressed", **base}, session=True)
        self.send("Input.dispatchMouseEvent", {"type": "mouseReleased", **base}, session=True)

    def screenshot(self, png_path, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or of the whole page) to ``png_path``."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
        data = base64.b64decode(self.send("Page.captureScreenshot", params, session=True)["data"])
        from tal_pipeline.fsutil import atomic_write_bytes

        return atomic_write_bytes(png_path, data)

    def poll(self) -> int | None:
        """The browser's exit status, or None while it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Close the browser (politely, then by force) and remove its profile."""
        if self.poll() is None:
            try:
                os.write(
                    self._to_child,
                    json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0",
                )
            except OSError:
                pass
            if not self._wait(5.0):
                try:
                    os.killpg(self.pid, signal.SIGKILL)  # the browser and its helper processes
                except ProcessLookupError:
                    pass
                self._wait(5.0)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def screenshot_report(
    html_path,
    png_path,
    width: int = 1280,
    height: int = 900,
    click_row: int | None = None,
    settle_s: float = 1.0,
) -> Path:
    """Screenshot a report page in headless Chromium; ``click_row`` first clicks that row of
    the first segment table (0-based) so the player shows that segment."""
    with HeadlessChromium(width, height) as b:
        b.navigate(Path(html_path).resolve().as_uri())
        if click_row is not None:
            box = b.evaluate(
                "(function(){var r=document.querySelectorAll('table.segments tbody tr')[%d];"
                "if(!r)return null;r.scrollIntoView({block:'center'});var q=r.getBoundingClientRect();"
                "return [q.left+q.width/2,q.top+q.height/2];})()".replace("%d", str(int(click_row)))
            )
            if box:
                b.click(*box)
            b.evaluate("window.scrollTo(0,0)")
        time.sleep(settle_s)  # let the seeked frame paint
        return b.screenshot(png_path)
