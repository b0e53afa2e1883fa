"""``dreamforge.config.json`` at a commit, read through GitHub's contents API, with each way it
can fail told apart (docs.github.com "REST API endpoints for repository contents"):

- a file of 1 MB or less comes base64-encoded in the JSON answer; above 1 MB (up to 100 MB) the
  JSON has ``encoding: "none"`` and no content, and only the raw media type gives the bytes;
- a directory comes back as a list of entries;
- a symlink whose target is a file in the repository comes back as that file; any other
  symlink, and a submodule, come back as an object without content;
- 404 means either "no such file" or "no such repository for you": GitHub answers 404, not 403,
  for a private repository the credential cannot read. Asking for the repository itself tells
  the two apart: only a missing file means "nothing to train".
"""

from __future__ import annotations

from dreamforge.github import client
from dreamforge.settings import Settings

CONFIG_FILE = "dreamforge.config.json"
RAW = "application/vnd.github.raw+json"


class Unreadable(Exception):
    """GitHub answered, and the config cannot be read from it; the message says why and what to
    do. ``visible``: whether the repository itself can be reached (a commit status can say it)."""

    def __init__(self, message: str, *, visible: bool = True) -> None:
        super().__init__(message)
        self.visible = visible


def fetch_config(settings: Settings, repo: str, sha: str) -> str | None:
    """The config's text at ``sha``; None when the commit has no such file (blocking: HTTP)."""
    from github import UnknownObjectException

    at = f"{CONFIG_FILE} at {sha[:12]}"
    try:
        gh = client.client(settings, repo, timeout=5)  # 5 s: a delivery is answered within GitHub's 10 s
    except client.NotInstalled as e:
        raise Unreadable(str(e), visible=False) from None
    try:
        got = gh.get_repo(repo).get_contents(CONFIG_FILE, ref=sha)
    except UnknownObjectException:
        try:
            gh.get_repo(repo, lazy=False)
        except UnknownObjectException:
            who = "the DreamForge App's installation" if client.app_mode(settings) else "GITHUB_TOKEN"
            raise Unreadable(f"GitHub answers 404 for {repo}: it is private and {who} cannot read it; give it read "
                             "access to the repository's contents", visible=False) from None  # fmt: skip
        return None
    if isinstance(got, list):
        raise Unreadable(f"{at} is a directory; it must be a file")
    if got.type == "symlink":
        raise Unreadable(f"{at} is a symlink to {got.raw_data.get('target')!r}, outside the repository's files; "
                         "commit the file itself")  # fmt: skip
    if got.type == "submodule":
        raise Unreadable(f"{at} is a submodule; commit the file itself")
    if got.type != "file":
        raise Unreadable(f"{at} is a {got.type}; it must be a file")
    if got.encoding == "none":  # over 1 MB: only the raw media type carries the bytes
        status, _, text = gh.requester.requestJson("GET", f"/repos/{repo}/contents/{CONFIG_FILE}", parameters={"ref": sha},
                                                   headers={"Accept": RAW})  # fmt: skip
        if status != 200:
            raise OSError(f"GitHub answered {status} for the raw {at}")
        return text
    return got.decoded_content.decode()
