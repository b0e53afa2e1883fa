"""The embedded local stack: database + API + workers (+ dashboard), as child processes.

``dreamforge up`` and the test fixtures start the same stack, so the tests exercise exactly
what a user runs. Each child gets the same environment: ``MONGODB_URI`` (the embedded
SecantusDB unless one is given), ``DREAMFORGE_HOME`` for artifacts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dreamforge.auth import create_project
from dreamforge.executors.local import die_with_parent_group  # children never outlive the stack's owner
from dreamforge.local import embedded_db
from dreamforge.settings import Settings
from dreamforge.store import client, ensure_indexes

DEV_PROJECT = "prj_dev"


@dataclass
class Stack:
    home: Path
    uri: str
    api_url: str
    dev_key: str
    env: dict[str, str]
    db: embedded_db.EmbeddedDB | None = None
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    dashboard: subprocess.Popen | None = None
    dashboard_url: str | None = None

    def start_worker(self, **env: str) -> subprocess.Popen:
        log = (self.home / "logs" / f"worker-{len(self.workers)}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "dreamforge.worker"], env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent_group)  # fmt: skip
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        procs = [p for p in [self.dashboard, *self.workers, self.api] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self.db is not None:
            self.db.stop()


def start_stack(home: Path, *, workers: int = 1, uri: str | None = None, port: int | None = None,
                dashboard: bool = False, extra_env: dict[str, str] | None = None) -> Stack:  # fmt: skip
    home = home.resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    db = None
    if uri is None:
        db = embedded_db.start(home / "db", log=home / "logs" / "db.log")
        uri = db.uri
    settings = Settings(mongodb_uri=uri, home=home)
    with client(uri) as c:
        ensure_indexes(c[settings.db_name])
        key_file = home / "dev-api-key"
        key = key_file.read_text().strip() if key_file.exists() else None
        _, key = create_project(c[settings.db_name], "dev", project_id=DEV_PROJECT, key=key)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    port = port or embedded_db.free_port()
    env = {
        **os.environ, "MONGODB_URI": uri, "DREAMFORGE_HOME": str(home), "DREAMFORGE_ALLOW_LOCAL_PATHS": "1",
        "DREAMFORGE_ALLOW_PRIVATE_URLS": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {}),
    }  # fmt: skip
    stack = Stack(home=home, uri=uri, api_url=f"http://127.0.0.1:{port}", dev_key=key, env=env, db=db)
    try:
        api_log = (home / "logs" / "api.log").open("ab")
        stack.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "dreamforge.api.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"], env=env, stdout=api_log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent_group,
        )  # fmt: skip
        wait_http(stack.api_url + "/healthz", stack.api)
        for _ in range(workers):
            stack.start_worker()
        if dashboard:
            start_dashboard(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def start_dashboard(stack: Stack) -> None:
    port = embedded_db.free_port()
    log = (stack.home / "logs" / "dashboard.log").open("ab")
    app = Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py"
    stack.dashboard = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        env={**stack.env, "DREAMFORGE_URL": stack.api_url, "DREAMFORGE_API_KEY": stack.dev_key},
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent_group,
    )  # fmt: skip
    stack.dashboard_url = f"http://127.0.0.1:{port}"
    wait_http(stack.dashboard_url + "/_stcore/health", stack.dashboard)  # print a URL that already answers


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
