"""A headless Chromium driven over the DevTools protocol, standard library only: to click a page's button as a
person does (a real mouse event, so a user gesture that lets audio start) and read the page while it plays.

Chromium's `--remote-debugging-pipe` takes protocol messages (JSON, each ended by a NUL byte) on its file
descriptor 3 and answers on 4 (https://chromedevtools.github.io/devtools-protocol/), so no websocket client or
Playwright is needed. Used by tests/test_generate_e2e.py.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
NO_CHROMIUM = "Chromium is not installed (Debian: apt install chromium): the report's browser check is skipped"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--remote-debugging-pipe")


class Browser:
    """One headless Chromium with one page; use as a context manager. Each call waits at most `timeout` s.
    `profile`: a folder for its user data and its log (chromium.log)."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        self.timeout, self.next_id, self.session, self.buffer = timeout, 0, None, b""
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # the child's ends moved above 9, so that putting them on 3 and 4 (what Chromium reads and writes) cannot
        # overwrite one with the other, as `3<&4 4>&3` would; bash, as dash takes no descriptor above 9
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{high[0]} 4>&{high[1]}', CHROMIUM, *FLAGS,
                 f"--user-data-dir={profile / 'data'}", "about:blank"],
                pass_fds=high, stdout=subprocess.DEVNULL, stderr=log)
        for fd in high:
            os.close(fd)

    def __enter__(self) -> "Browser":
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.session = None
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its DevTools pipe; its messages: {self.log}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, **params) -> dict:
        """Send one command (to the page once attached) and return its result; raises RuntimeError on an error."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while self._message(deadline).get("method") != "Page.loadEventFired":
            pass

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def click(self, selector: str) -> None:
        """A left click in the middle of the element `selector` (scrolled into view): a real mouse event."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView(); "
                      "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
