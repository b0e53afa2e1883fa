"""Model servers the API starts on demand, for the dashboard's "Try it".

The API never loads a model itself (it imports no torch, and one slow forward pass would hold up
every other request). A job's model is served by the same ``dreamforge serve`` that users run,
started here as a child process on a loopback port with a random key, and kept while it is used:
at most ``max_servers`` at once (the least recently used one stops first), each stopped after
``idle_s`` without a request, and all of them when the API stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dreamforge.serve.app import AUTH_HEADER

START_TIMEOUT_S = 180.0


class ServerFailed(RuntimeError):
    """The model server did not start; the message is the end of its log, for the user."""


@dataclass
class _Server:
    model_dir: Path
    proc: subprocess.Popen
    url: str
    key: str
    log: Path
    used: float = field(default_factory=time.monotonic)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ServerPool:
    def __init__(self, logs: Path, *, max_servers: int = 1, idle_s: float = 600.0) -> None:
        self.logs, self.max_servers, self.idle_s = logs, max_servers, idle_s
        self._servers: OrderedDict[Path, _Server] = OrderedDict()
        self._lock = asyncio.Lock()  # one start at a time: each loads a model into memory
        self.started = 0

    async def call(self, model_dir: Path, skill: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``/v1/{skill}`` of ``model_dir``'s server: (status, JSON answer)."""
        server = await self._get(model_dir)
        async with httpx.AsyncClient(timeout=120) as client:
            r = await client.post(f"{server.url}/v1/{skill}", json=body, headers={AUTH_HEADER: server.key})
        server.used = time.monotonic()
        try:
            answer = r.json()
        except ValueError:
            answer = {"error": f"the model server answered {r.status_code} without JSON"}
        return r.status_code, answer

    async def _get(self, model_dir: Path) -> _Server:
        async with self._lock:
            self._stop_idle()
            server = self._servers.get(model_dir)
            if server is not None and server.proc.poll() is None:
                self._servers.move_to_end(model_dir)
                return server
            if server is not None:  # it died: start it again
                self._servers.pop(model_dir)
            while len(self._servers) >= self.max_servers:
                self._servers.popitem(last=False)[1].stop()
            server = await asyncio.to_thread(self._start, model_dir)
            self._servers[model_dir] = server
            return server

    def _start(self, model_dir: Path) -> _Server:
        port, key = _free_port(), secrets.token_urlsafe(24)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"serve-{model_dir.parent.parent.name}-{port}.log"
        cmd = [sys.executable, "-m", "dreamforge.cli", "serve", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--batch-window-ms", "5"]  # fmt: skip
        env = {**os.environ, "DREAMFORGE_SERVE_API_KEY": key}  # not on the command line: `ps` shows that
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = _Server(model_dir, proc, f"http://127.0.0.1:{port}", key, log)
        self.started += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerFailed(_tail(log))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    return server
            time.sleep(0.2)
        server.stop()
        raise ServerFailed(f"the model server did not answer within {START_TIMEOUT_S:.0f} s")

    def _stop_idle(self) -> None:
        now = time.monotonic()
        for path, server in list(self._servers.items()):
            if now - server.used > self.idle_s or server.proc.poll() is not None:
                self._servers.pop(path).stop()

    def running(self) -> int:
        return sum(1 for s in self._servers.values() if s.proc.poll() is None)

    def stop(self) -> None:
        while self._servers:
            self._servers.popitem()[1].stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path) -> str:
    """The last line that says something: the CLI's own error sentence when there is one."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "the model server stopped at start-up"
