"""Child processes that never outlive their parent."""

from __future__ import annotations

import signal


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child (``preexec_fn`` or right after ``fork``): receive ``sig`` when the parent
    dies, so a killed worker or trainer never leaves orphans running (Linux PR_SET_PDEATHSIG;
    a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
