"""What each object in an answer costs: 4, 16 and 64 objects per image (issue 24).

For each count, on the crowded shelves of ``tests/test_many_objects.py``:

- ``tokens``: the answer's length in the built-in model's tokens (the codec's text);
- ``codec_ms``: encode plus decode of one answer;
- ``reward_ms``: the ``f1`` reward on one (answer, ground truth) pair (Hungarian matching);
- ``eval_ms``: the held-out metrics of one image (COCOeval included);
- ``train_step_s``: one forward and backward of the built-in model on 8 sequences as long as
  the image, the prompt and the answer (teacher forcing: what an SFT step pays);
- ``generate_s``: greedy decoding of one full-length answer (what evaluation and GRPO pay).

The last line is one JSON object with each figure per count and its ratio to 4 objects.

    OMP_NUM_THREADS=1 python benchmarks/many_objects.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipeline.codec import Codec  # noqa: E402
from pipeline.data import load_dataset  # noqa: E402
from pipeline.metrics import evaluate  # noqa: E402
from pipeline.models.tiny import build_tiny_vlm  # noqa: E402
from pipeline.rewards.builtin import get_reward  # noqa: E402
from tests.test_many_objects import crowded_coco  # noqa: E402

COUNTS = (4, 16, 64)
IMAGE_AND_PROMPT = 16 + 64  # the built-in model's image tokens, plus the chat prompt


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ds = load_dataset(crowded_coco(Path(tmp) / "shelf", images=4), "detect")
        sample = ds.splits["train"][0]
        codec = Codec("detect", ds.categories, num_bins=32, max_objects=64)
        model_dir = build_tiny_vlm(Path(tmp) / "model", family="llava", special_tokens=codec.special_tokens(),
                                   extra_words=ds.categories)  # fmt: skip
        from transformers import AutoModelForImageTextToText, AutoTokenizer

        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(model_dir)
        rows: dict[int, dict[str, float]] = {}
        reward = get_reward("f1")
        for n in COUNTS:
            gt = {**sample.target, "boxes": sample.target["boxes"][:n], "labels": sample.target["labels"][:n]}
            c = Codec("detect", ds.categories, num_bins=32, max_objects=n)
            text = c.encode(gt)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            pred = c.decode(text, sample.width, sample.height)[0]
            row = {
                "tokens": len(ids),
                "codec_ms": 1000 * timed(lambda c=c, gt=gt, text=text: (c.encode(gt), c.decode(text, sample.width, sample.height)), 50),
                "reward_ms": 1000 * timed(lambda pred=pred, gt=gt: reward.score([pred], [gt]), 50),
                "eval_ms": 1000 * timed(lambda pred=pred, gt=gt: evaluate([pred], [gt], [True], "detect", ds.categories), 10),
            }  # fmt: skip
            seq = torch.randint(5, len(tok), (8, IMAGE_AND_PROMPT + len(ids)))

            def step(seq=seq) -> None:
                model.zero_grad()
                model(input_ids=seq, labels=seq).loss.backward()

            row["train_step_s"] = timed(step, 5)
            prompt = torch.randint(5, len(tok), (1, IMAGE_AND_PROMPT))
            with torch.no_grad():
                row["generate_s"] = timed(lambda prompt=prompt, k=len(ids): model.generate(
                    input_ids=prompt, max_new_tokens=k, min_new_tokens=k, do_sample=False), 3)  # fmt: skip
            rows[n] = {k: round(v, 4) for k, v in row.items()}
            print(n, json.dumps(rows[n]), flush=True)  # noqa: T201
    base = rows[COUNTS[0]]
    out = {f"{k}_{n}": v for n, r in rows.items() for k, v in r.items()}
    out.update({f"{k}_ratio_{n}_vs_{COUNTS[0]}": round(r[k] / base[k], 2) for n, r in rows.items() if n != COUNTS[0]
                for k in r if base[k]})  # fmt: skip
    print(json.dumps(out))  # noqa: T201


if __name__ == "__main__":
    main()
