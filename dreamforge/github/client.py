"""Who speaks to GitHub for a repository: the DreamForge GitHub App's installation on it, or
(single tenant) one personal access token.

A GitHub App signs a short JWT with its private key and exchanges it for an installation
access token per installation (docs.github.com "Authenticating as a GitHub App installation");
that token reaches only the repositories the installation includes, with only the App's
permissions. PyGithub does the exchange: ``Auth.AppAuth`` signs, ``AppInstallationAuth`` mints
the token on first use and mints a new one shortly before it expires (``github/Auth.py``).
One ``Github`` client is kept per installation, so its token is reused until then.

Every client is built with ``retry=None``: the outboxes (``status``, ``push_outbox``) retry on
their own schedule, under the rate-limit pause they share (``limits``), and never sleep inside
a request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from dreamforge.settings import Settings

INSTALLATION_TTL_S = 600.0  # a repository's installation is looked up again after this
_lock = threading.Lock()
_installations: dict[tuple[str, str], tuple[float, int]] = {}  # (api url, repo) -> (looked up at, installation id)
_clients: dict[tuple[Any, ...], Any] = {}


class NotInstalled(Exception):
    """The App is not installed on the repository, or its installation excludes it."""


def app_mode(settings: Settings) -> bool:
    return bool(settings.github_app_id and settings.github_app_private_key)


def _kwargs(settings: Settings, timeout: int) -> dict[str, Any]:
    return {"base_url": settings.github_api_url, "retry": None, "timeout": timeout, "lazy": True,
            "seconds_between_requests": 0, "seconds_between_writes": settings.github_write_interval_s}  # fmt: skip


def _integration(settings: Settings, timeout: int):
    from github import Auth, GithubIntegration

    key = ("integration", settings.github_api_url, settings.github_app_id, timeout)
    with _lock:
        if key not in _clients:
            auth = Auth.AppAuth(settings.github_app_id, settings.github_app_private_key)
            _clients[key] = GithubIntegration(auth=auth, **_kwargs(settings, timeout))
        return _clients[key]


def installation_id(settings: Settings, repo: str, *, fresh: bool = False) -> int:
    """The id of the App's installation that includes ``repo`` (JWT-signed
    ``GET /repos/{owner}/{repo}/installation``); raises :class:`NotInstalled`."""
    from github import UnknownObjectException

    now = time.monotonic()
    with _lock:
        hit = _installations.get((settings.github_api_url, repo))
    if hit and not fresh and now - hit[0] < INSTALLATION_TTL_S:
        return hit[1]
    owner, name = repo.split("/", 1)
    try:
        inst = _integration(settings, 10).get_repo_installation(owner, name)
    except UnknownObjectException:
        with _lock:
            _installations.pop((settings.github_api_url, repo), None)
        raise NotInstalled(f"the DreamForge GitHub App is not installed on {repo} (or its installation excludes it): "
                           "install it there, with access to this repository") from None  # fmt: skip
    with _lock:
        _installations[(settings.github_api_url, repo)] = (now, int(inst.id))
    return int(inst.id)


def client(settings: Settings, repo: str, *, timeout: int = 10):
    """A PyGithub client allowed to act on ``repo``."""
    from github import Auth, Github

    if not app_mode(settings):
        key = ("token", settings.github_api_url, settings.github_token, timeout)
        with _lock:
            if key not in _clients:
                _clients[key] = Github(auth=Auth.Token(settings.github_token or ""), **_kwargs(settings, timeout))
            return _clients[key]
    inst = installation_id(settings, repo)
    key = ("installation", settings.github_api_url, settings.github_app_id, inst, timeout)
    with _lock:
        if key not in _clients:
            auth = Auth.AppAuth(settings.github_app_id, settings.github_app_private_key).get_installation_auth(inst)
            _clients[key] = Github(auth=auth, **_kwargs(settings, timeout))
        return _clients[key]


def credential(settings: Settings, repo: str) -> str:
    """The name of the credential that acts on ``repo``: GitHub's rate limits count per
    installation (App) or per token, and so does the pause all workers share (``limits``)."""
    if app_mode(settings):
        return f"installation:{installation_id(settings, repo)}"
    return "token:" + hashlib.sha256((settings.github_token or "").encode()).hexdigest()[:16]
