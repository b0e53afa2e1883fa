"""Loaded by the rank test's ``accelerate launch`` processes only (PYTHONPATH): records, per rank,
every write under ``DREAMFORGE_AUDIT_ROOT`` through Python's audit hooks (PEP 578): files opened
for writing, folders made, files and folders removed or renamed."""

import os
import sys

ROOT = os.environ.get("DREAMFORGE_AUDIT_ROOT")
LOG = os.path.join(os.environ.get("DREAMFORGE_AUDIT_DIR", "."), f"rank{os.environ.get('RANK', '0')}.log")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
busy = False


def _under(path) -> bool:
    try:
        return os.path.abspath(os.fsdecode(path)).startswith(ROOT)
    except (TypeError, ValueError):
        return False  # a file descriptor, not a path


def _writes(event: str, args: tuple) -> bool:
    if event == "open":
        path, mode, flags = args
        return _under(path) and (any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS))
    if event == "os.mkdir":
        return _under(args[0]) and not os.path.isdir(args[0])  # makedirs(exist_ok=True) of a folder there is no write
    if event in ("os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
        return _under(args[0])
    if event == "os.rename":
        return _under(args[0]) or _under(args[1])
    return False


def hook(event: str, args: tuple) -> None:
    global busy
    if busy or not event.startswith(("open", "os.", "shutil.")):
        return
    busy = True
    try:
        if _writes(event, args):
            with open(LOG, "a") as f:
                f.write(f"{event} {args[0]!r}\n")
    finally:
        busy = False


if ROOT:
    sys.addaudithook(hook)
