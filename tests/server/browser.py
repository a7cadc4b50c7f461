"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

No websocket library is needed: Chromium reads commands from fd 3 and writes answers to fd 4,
each a JSON object ended by a NUL byte. ``Browser`` opens one page and can set its width, load
a URL, evaluate an expression, and take a screenshot. The process is killed and reaped on close.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import subprocess
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

__all__ = ["Browser"]


class Browser:
    """One Chromium page; use as a context manager."""

    def __init__(self, chromium: str, profile: Path, *, timeout: float = 60) -> None:
        self._timeout = timeout
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # Chromium wants the pipe on fds 3 and 4 exactly: bash puts them there, then execs it.
        wire = (
            f'exec "$@" 3<&{commands_read} 4>&{answers_write} {commands_read}<&- {answers_write}>&-'
        )
        self._process = subprocess.Popen(
            ["bash", "-c", wire, "chromium", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(commands_read, answers_write),
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        try:
            target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})
            self._session = attached["sessionId"]
            self._call("Page.enable")
            self._call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(30)
        for fd in (self._commands, self._answers):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        msg = f"{method} failed: {answer['error']}"
                        raise RuntimeError(msg)
                    return dict(answer.get("result", {}))
            left = deadline - time.monotonic()
            if left <= 0:
                msg = f"chromium did not answer {method} within {self._timeout} s"
                raise TimeoutError(msg)
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    msg = f"chromium exited while answering {method}"
                    raise RuntimeError(msg)
                self._buffer += chunk

    def open(self, url: str, *, width: int, height: int = 900) -> None:
        """Load ``url`` in a viewport ``width`` px wide and wait until it has loaded."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
        self._call("Emulation.setDeviceMetricsOverride", metrics)
        self._call("Page.navigate", {"url": url})
        deadline = time.monotonic() + self._timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                msg = f"{url} did not finish loading within {self._timeout} s"
                raise TimeoutError(msg)
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript ``expression`` in the page (DevTools is not bound by CSP)."""
        result = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        """A PNG of the page (all of its height with ``full_page``)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        data = self._call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
