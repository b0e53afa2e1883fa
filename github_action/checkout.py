"""The config as committed at the sha the job is reported on.

On ``pull_request`` GitHub sets ``GITHUB_SHA`` to the merge commit of the head into the base,
and ``actions/checkout`` checks that merge commit out (docs.github.com "Events that trigger
workflows": pull_request, GITHUB_SHA "Last merge commit on the GITHUB_REF branch"). The
commit status and the job are for ``pull_request.head.sha``, so the config must be read at that
commit, not from the working tree: one sha, one config. The head is a parent of the merge
commit; with checkout's default ``fetch-depth: 1`` it is not in the clone, so it is fetched
(checkout leaves its credentials in the repository's git config for this).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

FIX = "check out the head commit: `uses: actions/checkout@v4` with `ref: ${{ github.event.pull_request.head.sha }}`"


class NotAtSha(Exception):
    """The commit cannot be read; the message says what to change in the workflow."""


def _git(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True, timeout=120)


def config_text(workspace: Path, path: str, sha: str | None) -> str | None:
    """The file's text at ``sha`` (the working tree when it is checked out there, or when the
    workspace is no git clone); None when the commit has no such file."""
    head = _git(workspace, "rev-parse", "HEAD")
    if sha is None or head.returncode != 0 or head.stdout.strip() == sha:
        f = workspace / path
        return f.read_text(encoding="utf-8") if f.is_file() else None
    if _git(workspace, "cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
        fetched = _git(workspace, "fetch", "--no-tags", "--depth=1", "origin", sha)
        if fetched.returncode != 0:
            raise NotAtSha(f"cannot read {path} at the pull request's head {sha[:12]} (the checkout is "
                           f"{head.stdout.strip()[:12]}; git fetch: {fetched.stderr.strip()[:200]}): {FIX}")  # fmt: skip
    if _git(workspace, "cat-file", "-e", f"{sha}:{path}").returncode != 0:
        return None
    return _git(workspace, "show", f"{sha}:{path}").stdout
