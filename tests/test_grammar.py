"""Decoding under the loc format's grammar: it never blocks an answer the codec would write, and
an untrained model's answers all parse under it (and mostly do not without it)."""

from __future__ import annotations

import pytest

from pipeline.codec import Codec
from pipeline.data import load_dataset
from pipeline.grammar import for_codec
from pipeline.models.loading import load_model
from pipeline.models.tiny import build_tiny_vlm
from pipeline.predict import generate_texts
from pipeline.stages.common import prompt_text

# a two-word label and a label that is a prefix of another: the tries must keep them apart
CATS = ["cola can", "cola", "soap"]
KINDS = {"detect": "retail-shelf", "segment": "generic", "keypoints": "traffic-camera"}


def _codec(task: str, ds) -> Codec:
    return Codec(task, CATS if task != "keypoints" else ds.categories, num_bins=32, max_objects=4,
                 keypoint_names=ds.keypoint_names or None)  # fmt: skip


@pytest.fixture(scope="module")
def sets():
    return {task: load_dataset(f"synthetic://{kind}?n=24&seed=3", task) for task, kind in KINDS.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sets):
    tokens = list(dict.fromkeys(t for task, ds in sets.items() for t in _codec(task, ds).special_tokens()))
    words = CATS + [c for ds in sets.values() for c in ds.categories]
    path = build_tiny_vlm(tmp_path_factory.mktemp("grammar") / "m", family="llava", special_tokens=tokens,
                          extra_words=words, image_size=32, patch=8, layers=1)  # fmt: skip
    from pipeline.device import pick_device

    return load_model(path, pick_device())


@pytest.mark.parametrize("task", list(KINDS))
def test_every_answer_the_codec_writes_is_allowed_token_by_token(task, sets, tiny):
    _, processor = tiny
    ds, tok = sets[task], processor.tokenizer
    codec = _codec(task, ds)
    prompt = prompt_text(processor, codec)
    rules = for_codec(codec, tok, prompt)
    assert rules is not None
    targets = [s.target for v in ds.splits.values() for s in v]
    if task != "keypoints":  # relabel with the awkward names, in turn
        targets = [{**t, "labels": [CATS[(i + j) % 3] for j in range(len(t["labels"]))]} for i, t in enumerate(targets)]
    targets.append({**targets[0], "boxes": [], "labels": [], "masks": [], "keypoints": []})  # "none"
    checked = 0
    for t in targets:
        answer = codec.encode(t)
        before = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(prompt + answer, add_special_tokens=False)["input_ids"][len(before):] + [tok.eos_token_id]
        for k, nxt in enumerate(ids):
            allowed = rules.allowed(ids[:k])
            assert nxt in allowed, f"{answer!r}: token {k} ({tok.convert_ids_to_tokens(nxt)}) blocked"
        checked += 1
    assert checked == len(targets) and any(len(t["boxes"]) > 1 for t in targets)


def test_an_untrained_models_answers_all_parse_under_the_grammar_and_stop_at_the_cap(sets, tiny):
    model, processor = tiny
    ds = sets["detect"]
    codec = Codec("detect", CATS, num_bins=32, max_objects=3)
    samples = [s for v in ds.splits.values() for s in v][:12]
    images = [s.image for s in samples]
    free = generate_texts(model, processor, images, codec, grammar=False)
    ruled = generate_texts(model, processor, images, codec)
    free_ok = [codec.decode(t, 64, 64)[1] for t in free]
    decoded = [codec.decode(t, 64, 64) for t in ruled]
    assert sum(free_ok) < len(free) // 2  # random weights babble
    assert all(ok for _, ok in decoded), [t for t, (_, ok) in zip(ruled, decoded, strict=True) if not ok]
    assert all(len(d["boxes"]) <= 3 for d, _ in decoded)
    # sampling keeps to the grammar too (stage 3's rejection sampling draws answers this way)
    sampled = generate_texts(model, processor, images[:4], codec, num_samples=4, temperature=1.0)
    assert all(codec.decode(t, 64, 64)[1] for t in sampled), [t for t in sampled if not codec.decode(t, 64, 64)[1]]
