"""Which project a repository belongs to, proven through the GitHub App.

An installation proves that the repository's owner let the DreamForge App in; it does not say
which DreamForge project the repository is for, and anyone may create a project. So linking
also asks the repository to name the project: ``.github/dreamforge-project`` on its default
branch holds the project id, a file only someone with write access to the repository can
commit. Both are read with the installation's own token, so a repository the installation
excludes cannot be linked at all.
"""

from __future__ import annotations

from fastapi import HTTPException

from dreamforge.github import client, limits
from dreamforge.github.webhooks import RepoLink
from dreamforge.settings import Settings

PROOF_FILE = ".github/dreamforge-project"


def verify(settings: Settings, pid: str, link: RepoLink) -> RepoLink:
    """The repository as GitHub names it (full name and numeric id), or an HTTPException saying
    what is missing (blocking: HTTP)."""
    from github import GithubException, UnknownObjectException

    try:
        client.installation_id(settings, link.name, fresh=True)
        repo = client.client(settings, link.name).get_repo(link.name, lazy=False)
        try:
            proof = repo.get_contents(PROOF_FILE)
            is_file = not isinstance(proof, list) and proof.type == "file" and proof.encoding == "base64"
            named = proof.decoded_content.decode(errors="replace").strip() if is_file else None
        except UnknownObjectException:
            named = None
    except client.NotInstalled as e:
        raise HTTPException(403, str(e)) from None
    except UnknownObjectException:
        raise HTTPException(403, f"the DreamForge App's installation cannot read {link.name}: give it access to "
                                 "this repository") from None  # fmt: skip
    except (GithubException, OSError) as e:
        raise HTTPException(502, f"GitHub did not answer about {link.name} ({limits.describe(e)}); try again") from None
    if link.id and link.id != repo.id:
        raise HTTPException(409, f"{link.name} has the id {repo.id} on GitHub, not {link.id}")
    if named != pid:
        raise HTTPException(403, f"to link {repo.full_name}, commit a file {PROOF_FILE} containing {pid} to its default "
                                 f"branch ({repo.default_branch}): it shows that you may write to the repository")  # fmt: skip
    return RepoLink(name=repo.full_name, id=repo.id)
