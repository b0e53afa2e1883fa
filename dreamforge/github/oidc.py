"""GitHub Actions OIDC tokens as the credential of ``POST /api/webhooks/github-action``.

A workflow with ``permissions: id-token: write`` can ask GitHub for a short-lived JWT naming the
repository, the event and the run. Verifying it needs no shared secret: the signature is checked
against GitHub's published keys (JWKS, fetched over HTTP and cached), then issuer, audience,
expiry, the event (``pull_request_target`` and ``workflow_run`` run a base repository's
privileges next to code a fork controls, so they are refused) and that the ``jti`` was never
used before. The caller maps ``repository_id`` (numeric: a repository deleted and re-created
under the same name gets a new id) to the project that pinned it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import jwt
from pymongo.errors import DuplicateKeyError

from dreamforge.store import JTIS

REFUSED_EVENTS = ("pull_request_target", "workflow_run")
LEEWAY_S = 30  # clock skew between GitHub and us
_CLIENTS: dict[str, jwt.PyJWKClient] = {}


class OidcError(Exception):
    """The token is not acceptable; the message says why (it is shown to the caller)."""


class KeysUnavailable(OidcError):
    """GitHub's signing keys could not be fetched: nothing is known about the token yet (503)."""


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def jwks_client(issuer: str) -> jwt.PyJWKClient:
    # PyJWKClient caches the key set (5 min) and refetches when a token names an unknown kid.
    if issuer not in _CLIENTS:
        _CLIENTS[issuer] = jwt.PyJWKClient(issuer.rstrip("/") + "/.well-known/jwks", cache_keys=True, lifespan=300, timeout=5)
    return _CLIENTS[issuer]


def verify(token: str, *, issuer: str, audience: str) -> dict[str, Any]:
    """The token's claims if signature, issuer, audience, expiry and event are right (blocking: JWKS over HTTP)."""
    try:
        key = jwks_client(issuer).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer, leeway=LEEWAY_S,
                            options={"require": ["exp", "iat", "iss", "aud", "jti", "repository_id", "repository"]})  # fmt: skip
    except jwt.PyJWKClientConnectionError as e:
        raise KeysUnavailable(f"cannot fetch GitHub's OIDC signing keys now ({e}); retry shortly") from None
    except jwt.PyJWKClientError as e:
        raise OidcError(f"OIDC token: cannot get the issuer's signing key ({e})") from None
    except jwt.InvalidAudienceError:
        raise OidcError(f"OIDC token: wrong audience; request the token with audience {audience!r}") from None
    except jwt.InvalidTokenError as e:
        raise OidcError(f"OIDC token rejected: {e}") from None
    if not re.fullmatch(r"[0-9]{1,20}", str(claims["repository_id"])):  # it keys the project lookup as an int
        raise OidcError("OIDC token rejected: repository_id is not a number")
    if claims.get("event_name") in REFUSED_EVENTS:
        raise OidcError(f"OIDC token from a {claims['event_name']} workflow: refused, since such workflows run with the "
                        "base repository's rights next to code a fork controls; use on: push or pull_request")  # fmt: skip
    return claims


def check_body(claims: dict[str, Any], *, ref: str, sha: str, event: str, workflows: str) -> str | None:
    """Why the body does not match what GitHub signed, or None. The token names the run's ref
    and, on push, its sha (on pull_request the token's sha is the merge commit, the body's the
    head); ``workflows``: comma-separated ``job_workflow_ref`` prefixes allowed, if any."""
    if claims.get("ref") is not None and claims["ref"] != ref:
        return f"the OIDC token is for {claims['ref']}, the body for {ref}"
    if event == "push" and claims.get("sha") is not None and claims["sha"] != sha:
        return f"the OIDC token is for commit {str(claims['sha'])[:12]}, the body for {sha[:12]}"
    allowed = [w.strip() for w in workflows.split(",") if w.strip()]
    if allowed and not any(str(claims.get("job_workflow_ref") or "").startswith(w) for w in allowed):
        return (f"workflow {claims.get('job_workflow_ref')!r} may not submit: the server allows only "
                f"{', '.join(allowed)} (DREAMFORGE_OIDC_WORKFLOWS)")
    return None


async def spend_jti(db, claims: dict[str, Any], delivery: str) -> None:
    """Record the token's ``jti`` with the delivery it carried. The same token again with the
    same delivery is the Action retrying after a lost answer (the delivery dedupes it to the
    same job); with another delivery it is a replay."""
    try:
        expires = datetime.fromtimestamp(int(claims["exp"]) + LEEWAY_S, UTC)
    except (OverflowError, ValueError, OSError):  # a finite but absurd exp (PyJWT checked it is a number)
        raise OidcError("OIDC token: exp is out of range") from None
    try:
        await db[JTIS].insert_one({"_id": str(claims["jti"]), "expires_at": expires, "delivery": delivery})
    except DuplicateKeyError:
        if (await db[JTIS].find_one({"_id": str(claims["jti"])}) or {}).get("delivery") == delivery:
            return
        raise OidcError("OIDC token already used (jti seen before): request a fresh token for each call") from None
