"""Every output format: encode, then decode, gives the canonical structure back within half a
bin of that format, whatever the image size and however its processor resizes it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codecs import FORMATS, codec_from_spec, make_format_codec
from pipeline.structures import empty_target

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CATS = ["cola", "water", "hot dog"]
KPS = ["left", "right", "top"]
TOL = 1e-6

# format name, its options, the tasks it writes
DETECTORS = [("loc", {"num_bins": 32}), ("text", {"num_bins": 50}), ("florence", {}), ("paligemma", {}),
             ("qwen-json", {"coords": "pixels"}), ("qwen-json", {"coords": "norm1000"})]  # fmt: skip
SEGMENTERS = [("loc", {"num_bins": 32}), ("text", {"num_bins": 50}), ("florence", {}), ("qwen-json", {"coords": "pixels"})]
KEYPOINTERS = [("loc", {"num_bins": 32}), ("text", {"num_bins": 50}), ("qwen-json", {"coords": "norm1000"}),
               ("qwen-json", {"coords": "pixels"})]  # fmt: skip
# Qwen's smart_resize refuses an aspect ratio over 200; real photos are far from it.
sides = st.integers(min_value=30, max_value=3000)


def units(codec, w: int, h: int) -> tuple[float, float]:
    """One bin of the format, in original pixels: the most a coordinate moves is half of it."""
    if codec.format == "qwen-json":
        iw, ih = codec.input_size(w, h) if codec.coords == "pixels" else (1000, 1000)
        return w / iw, h / ih
    return w / codec.num_bins, h / codec.num_bins


def close(got: float, want: float, unit: float, side: float, fmt: str) -> bool:
    if fmt == "paligemma" and want > side * (1 - 0.5 / 1024):
        return abs(got - want) <= unit + TOL  # the far border is clipped to <loc1023> (documented)
    return abs(got - want) <= unit / 2 + TOL * side


@st.composite
def scene(draw, task="detect", k=0):
    w, h = draw(sides), draw(sides)
    target = empty_target(w, h)
    for _ in range(draw(st.integers(0, 5))):
        # at least two bins of any format wide: a narrower box is widened to one bin (loc, text, qwen)
        x1 = draw(st.floats(0, w * 0.9)); x2 = draw(st.floats(x1 + w * 0.07, w))  # noqa: E702
        y1 = draw(st.floats(0, h * 0.9)); y2 = draw(st.floats(y1 + h * 0.07, h))  # noqa: E702
        target["boxes"].append([x1, y1, x2, y2])
        target["labels"].append(draw(st.sampled_from(CATS)))
        if task == "segment":
            xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
            target["masks"].append([x1, y1, x2, y1, xm, ym, x2, y2, x1, y2])
        if task == "keypoints":
            target["keypoints"].append([[draw(st.floats(x1, x2)), draw(st.floats(y1, y2)), draw(st.sampled_from([0, 2]))]
                                        for _ in range(k)])  # fmt: skip
    return target


def codec_of(fmt, opts, task="detect"):
    return make_format_codec(fmt, task, CATS, max_objects=8, max_vertices=8,
                             keypoint_names=KPS if task == "keypoints" else None, **opts)  # fmt: skip


@FAST
@pytest.mark.parametrize(("fmt", "opts"), DETECTORS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
@given(target=scene())
def test_detect_round_trips_within_half_a_bin(fmt, opts, target):
    codec = codec_of(fmt, opts)
    w, h = target["image"]["width"], target["image"]["height"]
    text = codec.encode(target)
    out, ok = codec.decode(text, w, h)
    assert ok, text
    order = codec.order(target)
    assert out["labels"] == [target["labels"][i] for i in order]
    uw, uh = units(codec, w, h)
    for i, got in zip(order, out["boxes"], strict=True):
        for k, (unit, side) in enumerate(((uw, w), (uh, h), (uw, w), (uh, h))):
            assert close(got[k], target["boxes"][i][k], unit, side, fmt), (text, got, target["boxes"][i])


@FAST
@pytest.mark.parametrize(("fmt", "opts"), SEGMENTERS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
@given(target=scene("segment"))
def test_segment_vertices_round_trip_within_half_a_bin(fmt, opts, target):
    codec = codec_of(fmt, opts, "segment")
    w, h = target["image"]["width"], target["image"]["height"]
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok
    uw, uh = units(codec, w, h)
    if fmt == "loc" or fmt == "text":  # polygon vertices sit on the N-point grid spanning the image
        uw, uh = w / (codec.num_bins - 1), h / (codec.num_bins - 1)
    for i, got in zip(codec.order(target), out["masks"], strict=True):
        want = target["masks"][i]
        assert len(got) == len(want)
        for k, (g, t) in enumerate(zip(got, want, strict=True)):
            assert close(g, t, uw if k % 2 == 0 else uh, w if k % 2 == 0 else h, fmt), (got, want)


@FAST
@pytest.mark.parametrize(("fmt", "opts"), KEYPOINTERS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
@given(target=scene("keypoints", k=3))
def test_keypoints_round_trip_within_half_a_bin_and_keep_absent_ones(fmt, opts, target):
    codec = codec_of(fmt, opts, "keypoints")
    w, h = target["image"]["width"], target["image"]["height"]
    out, ok = codec.decode(codec.encode(target), w, h)
    assert ok
    uw, uh = units(codec, w, h)
    for i, got in zip(codec.order(target), out["keypoints"], strict=True):
        for (gx, gy, gv), (tx, ty, tv) in zip(got, target["keypoints"][i], strict=True):
            assert (gv > 0) == (tv > 0)
            if tv > 0:
                assert abs(gx - tx) <= uw / 2 + TOL * w and abs(gy - ty) <= uh / 2 + TOL * h


@FAST
@pytest.mark.parametrize("fmt", ["loc", "text", "florence", "paligemma"])
@given(target=scene(), scale=st.sampled_from([2, 3]))
def test_normalised_formats_write_the_same_text_whatever_the_resolution(fmt, target, scale):
    """A processor that resizes or pads the image changes nothing: these formats are fractions
    of the original image."""
    codec = codec_of(fmt, {})
    big = empty_target(target["image"]["width"] * scale, target["image"]["height"] * scale)
    big["boxes"] = [[v * scale for v in b] for b in target["boxes"]]
    big["labels"] = list(target["labels"])
    assert codec.encode(big) == codec.encode(target)


def test_qwen25_pixels_follow_the_processors_resize():
    """Qwen2.5-VL's numbers are pixels of the image its processor resized: a 1000×500 photo
    is fed as 1008×504 (multiples of 28), and a box is written in those pixels."""
    codec = codec_of("qwen-json", {"coords": "pixels"})
    assert codec.input_size(1000, 500) == (1008, 504)
    t = empty_target(1000, 500)
    t["boxes"], t["labels"] = [[100.0, 50.0, 500.0, 250.0]], ["cola"]
    assert codec.encode(t) == '```json\n[{"bbox_2d": [101, 50, 504, 252], "label": "cola"}]\n```'
    big = codec_of("qwen-json", {"coords": "pixels", "max_pixels": 256 * 28 * 28})
    assert big.input_size(1000, 500) == (616, 308)  # clamped to max_pixels: fewer, larger pixels


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_reads_its_own_empty_answer_and_refuses_garbage(fmt):
    codec = codec_of(fmt, {})
    empty = empty_target(64, 48)
    out, ok = codec.decode(codec.encode(empty), 64, 48)
    assert ok and out["boxes"] == []
    for junk in ("", "cola", "<loc_5>", "[{", "```json\n[{\"bbox_2d\": [1, 2]}]\n```", None, "cola [1,2"):
        out, ok = codec.decode(junk, 64, 48)  # never raises
        assert not ok and isinstance(out["boxes"], list)


@pytest.mark.parametrize(("fmt", "opts"), DETECTORS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_spec_rebuilds_the_same_codec(fmt, opts):
    codec = codec_of(fmt, opts)
    again = codec_from_spec(codec.spec())
    assert type(again) is type(codec) and again.spec() == codec.spec()


def test_native_answers_of_each_family_decode():
    """Answers as the pretrained models write them (model cards / the processors' parsers)."""
    f = codec_of("florence", {})
    out, ok = f.decode("cola<loc_100><loc_200><loc_300><loc_400><loc_500><loc_200><loc_600><loc_400>", 1000, 1000)
    assert ok and out["labels"] == ["cola", "cola"] and out["boxes"][1] == [500.5, 200.5, 600.5, 400.5]
    p = codec_of("paligemma", {})
    out, ok = p.decode("<loc0256><loc0000><loc0512><loc1023> cola ; <loc0000><loc0000><loc0100><loc0100> water", 1024, 512)
    assert ok and out["boxes"][0] == [0.0, 128.0, 1023.0, 256.0] and out["labels"] == ["cola", "water"]
    q = codec_of("qwen-json", {"coords": "norm1000"})
    out, ok = q.decode('```json\n[\n\t{"bbox_2d": [0, 0, 500, 1000], "label": "Cola"}\n]\n```', 640, 480)
    assert ok and out["boxes"] == [[0.0, 0.0, 320.0, 480.0]] and out["labels"] == ["cola"]


def test_formats_without_an_output_for_a_task_say_so():
    with pytest.raises(ValueError, match="Florence-2 has no keypoint output"):
        codec_of("florence", {}, "keypoints")
    with pytest.raises(ValueError, match="VQ-VAE"):
        codec_of("paligemma", {}, "segment")


@pytest.mark.parametrize("fmt", ["loc", "text", "qwen-json"])
def test_keypoints_of_the_wrong_count_are_refused_when_encoding(fmt):
    codec = codec_of(fmt, {}, "keypoints")
    t = empty_target(64, 64)
    t["boxes"], t["labels"], t["keypoints"] = [[0, 0, 32, 32]], ["cola"], [[[1, 1, 2], [2, 2, 2]]]
    with pytest.raises(ValueError, match="has 2 keypoints, the codec expects 3"):
        codec.encode(t)
