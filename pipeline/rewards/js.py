"""JavaScript rewards: ``function reward(out, gt) { … }`` run in V8, out of process.

A :class:`JsReward` implements the same :class:`~pipeline.rewards.base.Reward` protocol as the
built-ins. Its code runs in a reward worker (``js_worker.py``): a child process with OS limits
(data segment, CPU time, open files), a V8 heap limit, a time limit per batch and per sample,
an empty environment, and one fresh V8 context per job, reused across that job's batches.
After any timeout, out-of-memory or crash the worker and its context are thrown away and a
new one is started, and the failure is reported as the reward's fault (a ``RewardError``
naming the reward, the sample and the JS line), never as the trainer's death.

The whole GRPO batch crosses into V8 in one call (measured: 128 separate calls 65 ms, one
batched call 0.9 ms). ``on_error="zero"`` scores a failing sample 0 and counts it instead of
failing the job.

One module of ~460 lines, kept whole on purpose: :class:`JsReward` is the parent's half of a
wire protocol with ``js_worker.py`` (framing, limits, restarts), and its pieces change together.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.procs import die_with_parent
from pipeline.rewards.base import LOADING, RewardError, reward_target

WORKER = Path(__file__).with_name("js_worker.py")
EXAMPLES = Path(__file__).with_name("examples")

F_SETPIPE_SZ = 1031  # Linux fcntl

_STACK_LINE = re.compile(r"reward\.js:(\d+):(\d+)")
_FIRST_LINE = re.compile(r"^(?:reward\.js|<anonymous>):(\d+): (.*)$")


@dataclass(frozen=True)
class JsLimits:
    """Limits of one reward worker; the defaults suit a GRPO batch of a few hundred samples."""

    batch_timeout_s: float = 10.0
    sample_timeout_ms: float = 1000.0
    load_timeout_s: float = 5.0
    # The reward's memory (rl.reward_memory_mb): V8's heap limit, and with slack_mb the whole
    # worker's RLIMIT_DATA over its measured fixed part, so buffers and strings outside the
    # heap count too (js_worker.MemoryCap).
    heap_mb: int = 256
    slack_mb: int = 64  # what the harness itself may use beyond the heap (batch copies, the answer)
    cpu_s: int = 3600  # RLIMIT_CPU over the worker's life; it is restarted when it runs out
    max_sample_bytes: int = 256 * 1024  # JSON size of one (out, gt) pair: a runaway output is refused

    def max_result_bytes(self, n: int) -> int:
        """The answer of a batch of ``n``: a number and at most one trimmed error per sample
        (the prelude cuts messages to 500 and stacks to 1000 characters; JSON escapes can
        make each character six bytes)."""
        return 64 * 1024 + n * 12 * 1024


# How much later than its stated limit a stuck worker is killed: the worker's own V8 timeout
# answers within ~0.7 s of the limit (its lingering-work check and sample lookup); past this,
# the parent stops waiting (an endless async loop can keep V8's termination from landing).
KILL_GRACE_S = 1.0
START_TIMEOUT_S = 60.0  # starting Python and V8 in the worker, before any user code runs
MAX_HEADER_BYTES = 64 * 1024


def sample_target(task: str = "detect", width: int = 64, height: int = 64) -> dict[str, Any]:
    """A small, valid ground truth of ``task`` for load-time checks, as stage 3 gives it
    (``reward_target``: detect and segment carry clicks and counts too)."""
    t: dict[str, Any] = {"boxes": [[8, 8, 24, 24], [30, 12, 50, 40]], "labels": ["object", "object"], "points": [],
                         "keypoints": [], "masks": [], "point_labels": [], "counts": {}, "crowd": [], "areas": [],
                         "mask_parts": [], "text": "",
                         "image": {"width": width, "height": height}}  # fmt: skip
    if task == "segment":
        t["masks"] = [[8, 8, 24, 8, 24, 24, 8, 24], [30, 12, 50, 12, 50, 40, 30, 40]]
    elif task == "keypoints":
        t["keypoints"] = [[[12, 12, 2], [20, 20, 2]], [[35, 20, 2], [45, 30, 2]]]
        t["points"] = [p[:2] for inst in t["keypoints"] for p in inst]
    elif task == "caption":
        t.update(boxes=[], labels=[], text="two objects on a plain background")
    return reward_target(t, task)


def _child_setup() -> None:
    """In the reward worker: its own session (killed as a group), and SIGKILL when the trainer
    dies, so no sandbox outlives the stage that started it."""
    os.setsid()
    die_with_parent()


class _WorkerDied(Exception):
    def __init__(self, kind: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.index = kind, message, index


class JsReward:
    """A JavaScript reward behind the :class:`Reward` protocol.

    ``source`` defines ``reward(out, gt)`` (or ``rewardBatch(pairs)``); ``out`` and ``gt`` are
    canonical targets (``pipeline.structures``). ``seed`` seeds ``Math.random``.
    """

    needs_parsed = False
    # Which images stage 3 gives it unless rl.label_kinds says otherwise: a user's reward may
    # read only boxes, so it gets clicked or counted images only when the config asks.
    label_kinds: tuple[str, ...] = ("full",)

    def __init__(self, source: str, name: str = "reward.js", *, seed: int = 0, on_error: str = "fail",
                 limits: JsLimits | None = None, on_sample_error: Callable[[RewardError], None] | None = None) -> None:  # fmt: skip
        if on_error not in ("fail", "zero"):
            raise ValueError(f"on_error must be 'fail' or 'zero', not {on_error!r}")
        self.source, self.name, self.seed, self.on_error = source, name, seed, on_error
        self.limits = limits or JsLimits()
        self.on_sample_error = on_sample_error
        self.errors = 0  # samples scored 0 under on_error="zero"
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    # -- the worker process ------------------------------------------------------------
    def _spawn(self) -> None:
        self.close()
        lim = self.limits
        env = {  # nothing of the trainer's environment (tokens, database URIs) reaches user code
            "PATH": "/usr/bin:/bin", "DF_REWARD_HEAP": str(lim.heap_mb << 20),
            "DF_REWARD_SLACK": str(lim.slack_mb << 20), "DF_REWARD_CPU_S": str(lim.cpu_s),
        }  # fmt: skip
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, cwd=tempfile.gettempdir(), preexec_fn=_child_setup,
        )  # fmt: skip
        for fh in (self._proc.stdin, self._proc.stdout):
            try:  # a batch is a few hundred KB: one pipe buffer instead of a context switch per 64 KB
                fcntl.fcntl(fh.fileno(), F_SETPIPE_SZ, 1 << 20)  # /proc/sys/fs/pipe-max-size
            except OSError:
                pass
        try:
            head, _ = self._request({"op": "load", "source": self.source, "seed": self.seed,
                                     "timeout_s": lim.load_timeout_s}, None, START_TIMEOUT_S)  # fmt: skip
            if head.get("state") == "started":  # V8 is up; the stated load limit runs from here
                head = self._answer(lim.load_timeout_s + KILL_GRACE_S)
        except _WorkerDied as d:
            raise self._error_from({"kind": d.kind, "message": d.message}, LOADING, loading=True) from None
        if not head.get("ok"):
            raise self._error_from(head, LOADING, loading=True)
        if head.get("state") != "ok":
            raise RewardError(self.name, LOADING, "defines neither `function reward(out, gt)` nor `function rewardBatch(pairs)`")

    def close(self) -> None:
        """Stop the worker (a new one starts on the next call)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        if proc is not None:
            for fh in (proc.stdin, proc.stdout):
                try:
                    fh.close()
                except OSError:
                    pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 — interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        # Picklable like every reward: the worker is per process and restarts on first use.
        return {**self.__dict__, "_proc": None, "_stderr": None}

    def _request(self, header: dict, payload: bytes | None, wait_s: float,
                 max_body: int = 0) -> tuple[dict, bytes | None]:  # fmt: skip
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        data = json.dumps(header).encode()
        frames = len(data).to_bytes(4, "big") + data
        if payload is not None:
            frames += len(payload).to_bytes(4, "big") + payload
        try:
            proc.stdin.write(frames)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None
        deadline = time.monotonic() + wait_s
        head = json.loads(self._read_frame(deadline, MAX_HEADER_BYTES))
        body = self._read_frame(deadline, max_body) if head.get("ok") and header["op"] == "score" else None
        return head, body

    def _answer(self, wait_s: float) -> dict:
        return json.loads(self._read_frame(time.monotonic() + wait_s, MAX_HEADER_BYTES))

    def _read_frame(self, deadline: float, limit: int) -> bytes:
        size = int.from_bytes(self._read_exact(4, deadline), "big")
        if size > limit:  # the worker caps what it sends; a bigger frame is never read into memory
            self.close()
            raise _WorkerDied("output", f"sent {size} bytes, over the {limit}-byte limit")
        return self._read_exact(size, deadline)

    def _read_exact(self, n: int, deadline: float) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd, buf = proc.stdout.fileno(), bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:  # V8's own timeout did not fire: the watchdog kills the worker
                self.close()
                raise _WorkerDied("timeout", "ran past its time limit and was stopped")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise self._died()
            buf += chunk
        return bytes(buf)

    def _died(self) -> _WorkerDied:
        proc = self._proc
        code = proc.wait(5) if proc is not None else None
        self.close()
        if code is not None and code < 0 and -code in (signal.SIGKILL, signal.SIGXCPU):
            why = "was killed by the OS (memory or CPU limit)"
        elif code == 133 or (code is not None and code < 0 and -code in (signal.SIGTRAP, signal.SIGABRT, signal.SIGSEGV)):
            why = "crashed V8 (a memory bomb such as a huge string or array)"
        else:
            why = f"stopped unexpectedly (exit code {code})"
        return _WorkerDied("crash", why)

    def _ensure(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                self.restarts += 1
            self._spawn()

    # -- scoring -----------------------------------------------------------------------
    def score(self, outs: list[dict], gts: list[dict]) -> list[float]:
        if len(outs) != len(gts):
            raise RewardError(self.name, None, f"{len(outs)} outputs for {len(gts)} ground truths")
        scores: list[float | None] = [None] * len(outs)
        errors: dict[int | None, RewardError] = {}
        pending: list[int] = list(range(len(outs)))
        try:
            payload: bytes | None = _encode(outs, gts)
        except TypeError as e:  # a value JSON cannot carry
            raise RewardError(self.name, None, f"a sample cannot be passed to JavaScript: {e}") from None
        # A batch under the per-sample limit cannot hold a sample over it (the usual case); only
        # a bigger one is looked at sample by sample.
        if len(payload) > self.limits.max_sample_bytes:
            pending, payload = [], None
            for i, o in enumerate(outs):
                size = _approx_bytes(o)
                if size > self.limits.max_sample_bytes:
                    errors[i] = RewardError(self.name, i, f"the output is about {size // 1024} KiB, over the "
                                            f"{self.limits.max_sample_bytes // 1024} KiB per-sample limit")  # fmt: skip
                else:
                    pending.append(i)
        retried_unknown = False
        while pending:
            try:
                self._ensure()
                if payload is None:  # a retry on a subset, or the batch after the size check
                    payload = _encode([outs[i] for i in pending], [gts[i] for i in pending])
                cap = self.limits.max_result_bytes(len(pending))
                head, body = self._request(
                    {"op": "score", "sample_ms": self.limits.sample_timeout_ms, "timeout_s": self.limits.batch_timeout_s,
                     "max_result": cap}, payload, self.limits.batch_timeout_s + KILL_GRACE_S, cap,
                )  # fmt: skip
            except (TypeError, ValueError) as e:  # a value JSON cannot carry
                raise RewardError(self.name, None, f"a sample cannot be passed to JavaScript: {e}") from None
            except _WorkerDied as d:
                head, body = {"ok": False, "kind": d.kind, "message": d.message, "index": d.index, "fatal": True}, None
            if head.get("ok"):
                got, got_errors = self._checked(body, len(pending))
                for k, s in enumerate(got):
                    scores[pending[k]] = s
                for k, err in got_errors:
                    idx = pending[k] if k is not None else None
                    errors[idx] = self._error_from(err, idx)
                for k, s in enumerate(got):  # a null score always comes with its error; make sure
                    if s is None and pending[k] not in errors and None not in errors:
                        errors[pending[k]] = RewardError(self.name, pending[k], "returned no score")
                if None in errors:  # rewardBatch failed as a whole
                    for i in pending:
                        errors.setdefault(i, errors[None])
                break
            if head.get("fatal"):
                self.close()
            k = head.get("index")
            if k is not None and 0 <= k < len(pending):
                bad = pending.pop(k)
                errors[bad] = self._error_from(head, bad)
                payload = None
                continue  # the rest of the batch runs again on a fresh worker
            if not retried_unknown:  # e.g. a context poisoned by an earlier batch's async loop
                retried_unknown = True
                continue
            for i in pending:
                errors[i] = self._error_from(head, i)
            break
        errors.pop(None, None)
        if errors:
            first = errors[min(errors)]
            if self.on_error == "fail":
                raise first
            if len(errors) == len(outs):  # scoring them all 0 would train on no signal at all
                raise RewardError(self.name, first.index, f"every sample of the batch failed ({len(outs)} of "
                                  f"{len(outs)}), so it carries no training signal; the first: {first.message}",
                                  first.line, first.column)  # fmt: skip
            self.errors += len(errors)
            if self.on_sample_error:
                for e in errors.values():
                    self.on_sample_error(e)
        return [float(s) if s is not None else 0.0 for s in scores]

    def _checked(self, body: bytes | None, n: int) -> tuple[list[float | None], list[tuple[int | None, dict]]]:
        """The harness's answer, checked: ``n`` scores, each a finite number or null, and
        errors naming a sample of the batch. The prelude writes it from primitives that user
        code cannot hook; anything else here means the sandbox was subverted, and is the
        reward's error, never a crash of the trainer or a NaN in training."""

        def bad(why: str) -> RewardError:
            return RewardError(self.name, None, f"the sandbox returned a malformed result ({why}); "
                                                "rewards must return one finite number per sample")  # fmt: skip

        try:
            result = orjson.loads(body or b"")  # strict JSON: no NaN or Infinity tokens
        except orjson.JSONDecodeError:
            raise bad("not JSON") from None
        if not isinstance(result, dict) or not isinstance(result.get("scores"), list):
            raise bad("no list of scores")
        raw, raw_errors = result["scores"], result.get("errors", [])
        if len(raw) != n:
            raise bad(f"{len(raw)} scores for {n} samples")
        scores: list[float | None] = []
        for k, s in enumerate(raw):
            if s is None:
                scores.append(None)
            elif isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s):
                scores.append(float(s))
            else:
                raise bad(f"score {k} is {type(s).__name__} {str(s)[:40]!r}, not a finite number")
        if not isinstance(raw_errors, list):
            raise bad("errors is not a list")
        errors: list[tuple[int | None, dict]] = []
        for err in raw_errors:
            k = err.get("index") if isinstance(err, dict) else "?"
            if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < n):
                raise bad(f"an error names sample {str(k)[:20]} of {n}")
            errors.append((k, err))
        return scores, errors

    def _error_from(self, err: dict, index: int | None, loading: bool = False) -> RewardError:
        kind, raw = err.get("kind", "js"), str(err.get("message", ""))
        line = column = None
        m = _STACK_LINE.search(str(err.get("stack", "")) + "\n" + raw)
        if m:
            line, column = int(m.group(1)), int(m.group(2))
        lines = raw.splitlines()
        first = _FIRST_LINE.match(lines[0]) if lines else None
        if first:  # V8's "<file>:LINE: Error: msg" + source line + caret line
            line = line or int(first.group(1))
            message = first.group(2)
            if column is None and len(lines) >= 3 and "^" in lines[2]:
                column = lines[2].index("^") + 1
        else:
            message = raw
        if kind == "timeout":
            message = (f"ran past the {self.limits.load_timeout_s:g} s limit while loading (an endless loop at top level?)"
                       if loading else f"ran past the {self.limits.batch_timeout_s:g} s batch limit (an endless loop?)")  # fmt: skip
        elif kind in ("memory", "crash"):
            message = f"{message} (memory limit: {self.limits.heap_mb} MiB, heap and buffers together)"
        where = f" at line {line}" + (f", column {column}" if column else "") if line else ""
        return RewardError(self.name, index, f"{message}{where}", line, column)


def _encode(outs: list[Any], gts: list[Any]) -> bytes:
    """The batch for the prelude's ``__df_run``: each distinct gt once (a GRPO group scores
    ``num_generations`` completions against one gt, and TrlReward hands the same dict for each).
    orjson: ten times faster than json here (float formatting dominates a batch of boxes); it
    writes NaN and Infinity as null, which the reward then sees as missing numbers."""
    index: dict[int, int] = {}
    distinct: list[Any] = []
    gi = []
    for g in gts:
        j = index.setdefault(id(g), len(distinct))
        if j == len(distinct):
            distinct.append(g)
        gi.append(j)
    return orjson.dumps({"o": outs, "g": distinct, "gi": gi})


def _approx_bytes(t: dict) -> int:
    """About the JSON size of a target, without encoding it (a runaway output has thousands
    of boxes, points or polygon vertices)."""
    n = 4 * len(t.get("boxes") or ()) + 2 * len(t.get("points") or ())
    if t.get("masks"):
        n += sum(len(m) for m in t["masks"])
    if t.get("keypoints"):
        n += sum(3 * len(k) for k in t["keypoints"])
    chars = len(t.get("text") or "") + 16 * len(t.get("labels") or ())
    return 8 * n + chars


def load_js_reward(path_or_source: str | os.PathLike[str], *, name: str | None = None, **kw: Any) -> JsReward:
    """A reward from a ``.js`` file (or ``example:NAME`` for a shipped example)."""
    spec = str(path_or_source)
    if spec.startswith("example:"):
        from pipeline.config import EXAMPLE_REWARDS

        example = spec.removeprefix("example:")
        if example not in EXAMPLE_REWARDS:  # by name from the fixed list: never a path out of the folder
            raise RewardError(spec, None, f"no such example; the examples are {', '.join(EXAMPLE_REWARDS)}")
        path = EXAMPLES / (example + ".js")
    else:
        path = Path(spec)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RewardError(str(path), None, f"cannot read the file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise RewardError(str(path), None, "the file is not UTF-8 text") from None
    return JsReward(source, name or path.name, **kw)


def check_reward(reward: JsReward, task: str = "detect") -> float:
    """Load-time check: compiles, defines ``reward``/``rewardBatch``, and returns a finite
    number on a sample (its score of a perfect prediction is returned)."""
    gt = sample_target(task)
    was = reward.on_error
    reward.on_error = "fail"
    try:
        return reward.score([json.loads(json.dumps(gt))], [gt])[0]
    finally:
        reward.on_error = was


def check_js_reward(source: str, name: str = "reward.js", task: str = "detect") -> float:
    """Check JavaScript source as :func:`check_reward` does; raises ``RewardError``."""
    reward = JsReward(source, name)
    try:
        return check_reward(reward, task)
    finally:
        reward.close()
