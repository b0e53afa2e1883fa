"""Which folder to serve, loading it, and running it on batches of concurrent requests.

A job's output folder (``ARTIFACTS/JOB_ID/out``, as the worker writes it) holds ``model/`` (the
full model) and, when the 4-bit export was made, ``model-4bit/``; its ``metrics.json`` says which
one is the release (the 4-bit one only when it passed the export gate).

Batching: the requests waiting when the model frees up share one ``generate`` call (one forward
pass per generated token for the whole batch instead of one per request), up to ``max_batch``
images. A batch also waits up to ``window_s`` for requests still on their way (received, their
body or image still being read), but never for requests that may or may not come: a lone client
pays no window, and under load the batch fills while the model runs the one before it (as
continuous-batching servers do). ``batches`` counts the calls; ``/health`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.codec import CODEC_FILE, Codec

FORMATS = ("release", "full", "4bit")


def resolve(target: str, artifacts: Path, fmt: str = "release") -> Path:
    """The model folder for ``target``: a model folder, a job's output folder, or a job id
    (looked up in the local ``artifacts`` folder). Raises ``FileNotFoundError`` saying why."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(target)
    if not path.is_dir():
        job_out = artifacts / target / "out"
        if not job_out.is_dir():
            raise FileNotFoundError(
                f"{target}: neither a model folder nor a job with a trained model in {artifacts} "
                "(give an exported model folder, a job's output folder, or the id of a job that ran here)"
            )
        path = job_out
    if (path / CODEC_FILE).exists():
        if fmt != "release":
            raise ValueError(f"{target} is a model folder; --format {fmt} picks a model in a job's output folder")
        return path
    if not (path / "model" / CODEC_FILE).exists():
        raise FileNotFoundError(f"{target}: no exported model (no model/{CODEC_FILE}); has the job finished?")
    if fmt == "release":
        release = _release_format(path)
        fmt = "full" if release in (None, "16-bit") else "4bit"
    chosen = path / ("model" if fmt == "full" else "model-4bit")
    if not (chosen / CODEC_FILE).exists():
        raise FileNotFoundError(f"{target}: no {chosen.name}/ (the job made no 4-bit export); use --format full")
    return chosen


def _release_format(out: Path) -> str | None:
    try:
        return json.loads((out / "metrics.json").read_text())["evaluation"]["release"]["release_format"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_codec(model_dir: Path) -> Codec:
    from pipeline.codecs import codec_from_spec

    return codec_from_spec(json.loads((model_dir / CODEC_FILE).read_text()))


@dataclass
class _Pending:
    image: Any
    done: asyncio.Future


@dataclass
class ServedModel:
    """The loaded model; :meth:`predict` is what requests await."""

    model_dir: Path
    window_s: float = 0.01
    max_batch: int = 8
    codec: Codec = field(init=False)
    batches: int = 0
    images: int = 0
    arriving: int = 0

    def __post_init__(self) -> None:
        from pipeline.device import pick_device
        from pipeline.models.loading import load_model
        from pipeline.run import quiet_libraries

        quiet_libraries()
        self.codec = load_codec(self.model_dir)
        self.device = pick_device()
        self.model, self.processor = load_model(self.model_dir, self.device)
        cfg = (self.model_dir / "config.json").read_text()
        self.quantized = "quantization_config" in cfg
        self._lock = threading.Lock()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._runner: asyncio.Task | None = None

    def run_batch(self, images: list[Any]) -> list[dict[str, Any]]:
        """Decoded targets for ``images``, in one ``generate`` call."""
        from pipeline.predict import generate_texts

        with self._lock:
            texts = generate_texts(self.model, self.processor, images, self.codec, batch_size=max(1, len(images)))
            self.batches += 1
            self.images += len(images)
        return [self.codec.decode(t, im.width, im.height)[0] for t, im in zip(texts, images, strict=True)]

    @contextlib.contextmanager
    def arriving_request(self) -> Iterator[None]:
        """Marks a request whose images are still being read: a batch about to run waits for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def predict(self, images: list[Any]) -> list[dict[str, Any]]:
        """Targets for ``images``, batched with whatever other requests arrive meanwhile."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._runner = asyncio.create_task(self._serve_queue())
        loop = asyncio.get_running_loop()
        pending = [_Pending(im, loop.create_future()) for im in images]
        for p in pending:
            self._queue.put_nowait(p)
        return list(await asyncio.gather(*(p.done for p in pending)))

    async def _serve_queue(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0 or not self.arriving:
                    break
                # a request is being read: give it until the window closes, checking as it lands
                with contextlib.suppress(TimeoutError):
                    batch.append(await asyncio.wait_for(self._queue.get(), min(left, 0.002)))
            try:
                results = await asyncio.to_thread(self.run_batch, [p.image for p in batch])
            except Exception as e:  # noqa: BLE001 — every waiting request hears of it; the loop goes on
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(e)
                continue
            for p, r in zip(batch, results, strict=True):
                if not p.done.done():
                    p.done.set_result(r)

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "images": self.images,
                "batch_window_ms": round(self.window_s * 1000, 3), "max_batch": self.max_batch}  # fmt: skip
