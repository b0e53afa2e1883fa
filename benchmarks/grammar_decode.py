"""What decoding under the loc grammar (``pipeline/grammar.py``) costs.

The built-in model at the size the default job builds for 96-pixel tiles (one image token)
answers the same images greedily with the grammar and without it, alternating, several
rounds; the figures are the medians. The model is untrained (random weights), so free
decoding often runs to the token cap while the grammar ends answers at ``max_objects``
objects: ``tokens_per_answer`` says how long each side's answers were, and
``grammar_share_of_decoding`` (time inside the grammar's logits processor over the grammar
run's time) and ``same_length_ratio`` (grammar / free decoding capped at the grammar's answer
length) are the fair figures; ``ms_per_token_ratio`` charges the short answers their whole
prompt and overstates the cost.

    OMP_NUM_THREADS=1 python benchmarks/grammar_decode.py [--images 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-objects", type=int, default=8)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from pipeline.codec import Codec
    from pipeline.data import load_dataset
    from pipeline.device import pick_device
    from pipeline.models.loading import load_model
    from pipeline.models.tiny import build_tiny_vlm
    from pipeline.predict import generate_texts

    ds = load_dataset(f"synthetic://retail-shelf?n={args.images}&seed=1&size=96", "detect")
    images = [s.image for v in ds.splits.values() for s in v][: args.images]
    codec = Codec("detect", ds.categories, num_bins=32, max_objects=args.max_objects)
    path = build_tiny_vlm(Path(tempfile.mkdtemp()) / "m", family="idefics3", special_tokens=codec.special_tokens(),
                          extra_words=ds.categories, image_size=96, patch=12, merge=8)  # fmt: skip
    model, processor = load_model(path, pick_device())
    tok = processor.tokenizer
    from pipeline import grammar

    inside = [0.0]
    plain_call = grammar.GrammarLogits.__call__

    def timed(self, input_ids, scores):
        t = time.perf_counter()
        try:
            return plain_call(self, input_ids, scores)
        finally:
            inside[0] += time.perf_counter() - t

    grammar.GrammarLogits.__call__ = timed
    runs: dict[str, list[tuple[float, int]]] = {"grammar": [], "free": []}
    for _ in range(args.rounds):
        for name in runs:
            t = time.perf_counter()
            texts = generate_texts(model, processor, images, codec, grammar=name == "grammar")
            took = time.perf_counter() - t
            runs[name].append((took, sum(len(tok(x, add_special_tokens=False)["input_ids"]) + 1 for x in texts)))
    out: dict = {"images": len(images), "rounds": args.rounds}
    for name, rs in runs.items():
        out[f"{name}_s"] = round(statistics.median(t for t, _ in rs), 3)
        out[f"{name}_tokens_per_answer"] = round(statistics.median(n for _, n in rs) / len(images), 1)
        out[f"{name}_ms_per_token"] = round(statistics.median(1000 * t / n for t, n in rs), 3)
        parsed = [codec.decode(x, 96, 96)[1] for x in generate_texts(model, processor, images[:16], codec, grammar=name == "grammar")]
        out[f"{name}_parse_rate"] = sum(parsed) / len(parsed)
    out["ms_per_token_ratio"] = round(out["grammar_ms_per_token"] / out["free_ms_per_token"], 3)
    # the fair figure: the grammar's own share of its decoding time (answers of different
    # lengths make per-token times unequal: a short answer carries its prompt's whole cost)
    total = sum(t for t, _ in runs["grammar"])
    out["grammar_share_of_decoding"] = round(inside[0] / total, 3)
    # free decoding capped at the grammar's answer length: the same tokens, without the grammar
    cap = int(out["grammar_tokens_per_answer"])
    t = time.perf_counter()
    for _ in range(args.rounds):
        generate_texts(model, processor, images, codec, grammar=False, max_new_tokens=cap)
    out["free_same_length_s"] = round((time.perf_counter() - t) / args.rounds, 3)
    out["same_length_ratio"] = round(out["grammar_s"] / out["free_same_length_s"], 3)
    print(json.dumps(out))  # noqa: T201


if __name__ == "__main__":
    main()
