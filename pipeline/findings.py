"""A preflight finding: ``{check, severity, message, fix}``, the one shape every check reports in."""

from __future__ import annotations

SEVERITIES = ("info", "warning", "error")


def finding(check: str, severity: str, message: str, fix: str = "") -> dict[str, str]:
    assert severity in SEVERITIES, severity
    return {"check": check, "severity": severity, "message": message, "fix": fix}
