"""The reward worker: a child process that runs one JavaScript reward in V8 (mini-racer).

Why a process of its own: measured with mini-racer 0.14.1, V8's heap limit does not stop a
huge string or ArrayBuffer, ``s.split('')`` on a 2^28-character string killed the whole
Python process (V8 fatal error, exit 133), and an endless async loop poisons the context. So
user code never runs in the trainer: it runs here, under OS limits, and the parent
(``pipeline.rewards.js``) restarts this process after any timeout, out-of-memory or crash.

Protocol on stdin/stdout, one frame per message: a 4-byte big-endian length, then a JSON
header; a ``score`` request and every ``ok`` answer carry a second length-prefixed frame
with the raw JSON payload (``js.py``'s ``_encode``), so the batch is never decoded here: it is
handed to ``__df_run`` as one V8 string that V8's JSON.parse reads, and the harness's JSON
string goes back as is. Started as a script (``python -I js_worker.py``), not as a module, so
it imports nothing of the project (fast restarts, nothing of the trainer in reach).
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
from pathlib import Path

_LEN = struct.Struct(">I")


def read_frame(fh) -> bytes | None:
    head = fh.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    data = fh.read(n)
    return data if len(data) == n else None


def write_frame(fh, data: bytes) -> None:
    fh.write(_LEN.pack(len(data)) + data)


def apply_limits(data_bytes: int, cpu_s: int) -> None:
    """OS limits on this process. RLIMIT_DATA, not RLIMIT_AS: V8 reserves its pointer cage as
    address space up front, and even a 4 GiB RLIMIT_AS makes V8 abort at start-up (measured);
    RLIMIT_DATA counts only memory actually made writable. ``data_bytes`` only bounds start-up:
    once V8 is up, :class:`MemoryCap` lowers it to what the reward may use. RLIMIT_CPU is a
    backstop for the whole life of the worker; per-call limits are V8 timeouts plus the
    parent's watchdog."""
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))


def data_bytes_now() -> int:
    """This process's RLIMIT_DATA-counted memory (VmData: writable private mappings)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) << 10
    raise RuntimeError("no VmData in /proc/self/status")


class MemoryCap:
    """The reward's memory limit as an OS limit on the whole process, not only V8's heap:
    ArrayBuffers and big strings live outside the heap, where V8's limit does not see them
    (a 1 GiB ArrayBuffer passed a 256 MiB heap limit). The fixed part (the interpreter, V8's
    code range reserved writable up front: 560 MiB, measured with mini-racer 0.14.1) is
    measured once V8 and the prelude are up; the limit is that plus the heap limit, a small
    slack for the harness, and room for the batch being scored (its bytes, string and JSON
    copies)."""

    def __init__(self, heap_bytes: int, slack_bytes: int) -> None:
        self.base = data_bytes_now()
        self.heap_bytes, self.slack_bytes = heap_bytes, slack_bytes
        self.hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        self.set(0)

    def set(self, batch_bytes: int) -> None:
        soft = self.base + self.heap_bytes + self.slack_bytes + 4 * batch_bytes
        if self.hard != resource.RLIM_INFINITY:
            soft = min(soft, self.hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, self.hard))


class Lingering(Exception):
    """The reward returned but left work running (an endless async loop)."""


class Sandbox:
    """One V8 context. Created and driven from inside a running asyncio loop, so mini-racer
    uses that loop instead of a thread of its own: a call then costs one hop to V8's thread
    instead of three (measured: an empty eval 0.20 ms against 0.34 ms, a three-argument
    function call 0.36 against 0.51 ms)."""

    def __init__(self, heap_bytes: int, slack_bytes: int) -> None:
        from py_mini_racer import MiniRacer

        self.ctx = MiniRacer()
        self.ctx.set_hard_memory_limit(heap_bytes)
        self.heap_bytes = heap_bytes
        self.calls = 0
        prelude = Path(__file__).with_name("js_prelude.js").read_text()
        self.ctx.eval(prelude)  # our own code: no time limit needed
        self.globals = self.ctx.eval("globalThis")
        self.memory = MemoryCap(heap_bytes, slack_bytes)

    async def _eval(self, code: str, timeout_s: float):
        import asyncio

        from py_mini_racer import JSTimeoutException

        try:  # on timeout wait_for cancels the task, and mini-racer terminates the running JS
            return await asyncio.wait_for(self.ctx.eval_cancelable(code), timeout_s)
        except TimeoutError:
            raise JSTimeoutException() from None

    async def load(self, source: str, seed: int, timeout_s: float) -> str:
        self.ctx.eval(f"__df_seed({int(seed)})")
        # sourceURL names the user's file in stack traces (reward.js:LINE:COL).
        await self._eval(source + "\n//# sourceURL=reward.js", timeout_s)
        return str(self.ctx.eval("__df_check()"))

    async def score(self, payload: bytes, sample_ms: float, timeout_s: float) -> str:
        from py_mini_racer import JSTimeoutException

        self.calls += 1
        self.memory.set(len(payload))
        # The batch goes in as a V8 string as is: as a script literal it would first be escaped
        # and compiled (8.6 vs 5.8 ms for 512 pairs, measured).
        self.globals["__df_in"] = payload.decode()
        result = str(await self._eval(f"__df_run(globalThis.__df_in, {float(sample_ms)}, {self.calls})", timeout_s))
        # Work a reward leaves behind (an endless async loop) runs on the next call and would
        # time out the next batch; a no-op call right away pins it on this one.
        try:
            await self._eval("0", 0.5)
        except JSTimeoutException:
            raise Lingering() from None
        return result

    async def current_index(self) -> int | None:
        """The sample the harness was on when this call was stopped, if it got that far."""
        try:
            i = await self._eval(f"globalThis.__df_call === {self.calls} ? globalThis.__df_i : -1", 0.2)
        except Exception:  # noqa: BLE001 — a poisoned context cannot tell; the sample stays unknown
            return None
        return int(i) if isinstance(i, int | float) and i >= 0 else None


MAX_MESSAGE_CHARS = 4000  # a V8 error message carries user text (a thrown 200 MB string)


def _error(kind: str, message: str, **extra) -> bytes:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "…"
    return json.dumps({"ok": False, "kind": kind, "message": message, **extra}).encode()


async def serve(inp, out, heap_bytes: int, slack_bytes: int) -> None:
    """The request loop. Reading stdin blocks the asyncio loop, which is fine: nothing runs on
    it between requests."""
    from py_mini_racer import JSEvalException, JSOOMException, JSParseException, JSTimeoutException

    sandbox: Sandbox | None = None
    while True:
        head = read_frame(inp)
        if head is None:
            return
        msg = json.loads(head)
        op = msg["op"]
        try:
            if op == "load":
                sandbox = Sandbox(heap_bytes, slack_bytes)
                # V8 is up: the load's time limit starts now, on the parent's clock too.
                write_frame(out, b'{"ok": true, "state": "started"}')
                out.flush()
                state = await sandbox.load(msg["source"], msg.get("seed", 0), msg["timeout_s"])
                write_frame(out, json.dumps({"ok": True, "state": state}).encode())
            elif op == "score":
                payload = read_frame(inp) or b"[]"
                assert sandbox is not None, "score before load"
                result = (await sandbox.score(payload, msg["sample_ms"], msg["timeout_s"])).encode()
                if len(result) > msg["max_result"]:  # the harness trims messages: only tampering gets here
                    write_frame(out, _error("output", f"returned {len(result)} bytes of results, over the "
                                                      f"{msg['max_result']}-byte limit", fatal=True))  # fmt: skip
                else:
                    write_frame(out, b'{"ok": true}')
                    write_frame(out, result)
            else:
                write_frame(out, _error("protocol", f"unknown op {op!r}"))
        except Lingering:
            write_frame(out, _error("lingering", "keeps running after it returns (an endless async loop?)", fatal=True))
        except JSTimeoutException:
            index = await sandbox.current_index() if sandbox else None
            write_frame(out, _error("timeout", "ran past its time limit", index=index, fatal=True))
        except JSOOMException:
            index = await sandbox.current_index() if sandbox else None
            write_frame(out, _error("memory", "ran out of memory", index=index, fatal=True))
        except JSParseException as e:
            write_frame(out, _error("syntax", str(e)))
        except JSEvalException as e:
            index = await sandbox.current_index() if sandbox else None
            if sandbox is not None and sandbox.ctx.was_hard_memory_limit_reached():
                # The heap limit can surface as a bare "null" eval error rather than an OOM.
                write_frame(out, _error("memory", "ran out of memory", index=index, fatal=True))
            else:
                write_frame(out, _error("js", str(e), index=index))
        except MemoryError:
            write_frame(out, _error("memory", "ran out of memory", fatal=True))
        except Exception as e:  # noqa: BLE001 — anything else V8 raised is the reward's fault, reported
            write_frame(out, _error("js", f"{type(e).__name__}: {e}", fatal=True))
        out.flush()


def main() -> None:
    heap = int(os.environ.get("DF_REWARD_HEAP", 256 << 20))
    slack = int(os.environ.get("DF_REWARD_SLACK", 64 << 20))
    apply_limits(int(os.environ.get("DF_REWARD_DATA", 2 << 30)), int(os.environ.get("DF_REWARD_CPU_S", 3600)))
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the protocol stream.
    sys.stdout = sys.stderr
    try:
        import asyncio

        asyncio.run(serve(inp, out, heap, slack))
    finally:
        out.flush()
        # V8's teardown can hang at interpreter exit (seen with mini-racer 0.14.1): skip it.
        os._exit(0)


if __name__ == "__main__":
    main()
