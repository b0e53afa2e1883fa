"""Hostile dataset uploads against the real API process: every one is a 422 that names the
upload and its member (never a server path), leaves nothing on disk, and the API's memory
stays bounded while it checks big images."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from service_helpers import api

from dreamforge.local.stack import start_stack

MAX_UPLOAD = 40 << 20  # the stack's upload limit: archives may expand to twice this (80 MiB)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads")
    (root / "tmp").mkdir()
    (root / "cache").mkdir()
    return root


@pytest.fixture(scope="module")
def stack(dirs):
    s = start_stack(dirs / "stack", workers=0,
                    extra_env={"TMPDIR": str(dirs / "tmp"), "DREAMFORGE_CACHE": str(dirs / "cache"),
                               "DREAMFORGE_MAX_UPLOAD": str(MAX_UPLOAD)})  # fmt: skip
    yield s
    s.stop()


def _png(size: tuple[int, int], colour=(30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _coco(n: int = 2, size: tuple[int, int] = (32, 24), **over) -> dict:
    doc = {"images": [{"id": i + 1, "file_name": f"img_{i}.png", "width": size[0], "height": size[1]} for i in range(n)],
           "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 8, 8]} for i in range(n)],
           "categories": [{"id": 1, "name": "cola"}]}  # fmt: skip
    return {**doc, **over}


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _dataset(doc: dict, image: bytes | None = None, **extra: bytes | str) -> bytes:
    image = image or _png((32, 24))
    return _zip({"annotations.json": json.dumps(doc), **{f"images/{im['file_name']}": image for im in doc["images"]}, **extra})


def _left_on_disk(dirs: Path) -> list[str]:
    return [p.relative_to(dirs).as_posix() for d in ("tmp", "cache") for p in (dirs / d).rglob("*")]


def _bomb(zeros_mib: int, noise_mib: float = 0) -> bytes:
    """A dataset with a member of ``zeros_mib`` MiB of zeros (~1000-fold), written without
    holding it, and ``noise_mib`` MiB of random bytes (which do not compress)."""
    import os

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.json", json.dumps(_coco(1)))
        zf.writestr("images/img_0.png", _png((32, 24)))
        zf.writestr("images/noise.bin", os.urandom(int(noise_mib * (1 << 20))))
        with zf.open("images/zeros.bin", "w") as fh:
            chunk = bytes(1 << 20)
            for _ in range(zeros_mib):
                fh.write(chunk)
    return buf.getvalue()


CASES = {
    # 75 MiB from 80 KB: under the byte cap, over the ratio cap
    "bomb": (lambda: _bomb(75), r"bomb.zip: the archive would expand \d{3,4}-fold .* more than the 100-fold "
                                r"allowed \(member 'images/zeros.bin'"),
    # 81.5 MiB from 1.6 MiB (~50-fold): under the ratio cap, over the byte cap
    "big": (lambda: _bomb(80, noise_mib=1.5),
            r"big.zip: the archive would expand to \d+ bytes, more than the 83886080 allowed"),
    "deep": (lambda: _zip({"annotations.json": '{"images": ' + "[" * 200_000 + "]" * 200_000 + "}"}),
             r"deep.zip: annotations.json: the JSON is nested too deeply"),
    "longname": (lambda: _dataset(_coco(categories=[{"id": 1, "name": "x" * (1 << 20)}])),
                 r'longname.zip: annotations.json: categories\[0\] \(category 1\): "name" is 1048576 characters'),
    "manycats": (lambda: _dataset(_coco(categories=[{"id": i, "name": f"c{i}"} for i in range(1, 100_001)])),
                 r'manycats.zip: annotations.json: "categories" has 100000 entries, more than the 2000 allowed'),
    # thousands of members extract fine, then the annotations fail: the extracted files must go too
    "wide": (lambda: _zip({"annotations.json": '{"images": [], "annotations": [], "categories": [7]}',
                           **{f"junk/{i}.txt": "x" for i in range(3000)}}),
             r"wide.zip: annotations.json: categories\[0\] must be an object"),
    "slip": (lambda: _zip({"../../evil.json": "{}", "annotations.json": "{}"}),
             r"slip.zip: member '../../evil.json' has '..' in its path"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_upload_is_a_clear_422_and_leaves_nothing_behind(stack, dirs, db, case):
    import re

    make, expected = CASES[case]
    body = make()
    assert len(body) < MAX_UPLOAD
    before = db["datasets"].count_documents({}), db["datasets.files"].count_documents({})
    with api(stack) as c:
        r = c.post("/api/datasets", params={"name": case}, content=body)
    assert r.status_code == 422, r.text[:500]
    detail = r.json()["detail"]
    assert re.search(expected, detail), detail[:500]
    assert len(detail) < 2500 and str(dirs) not in detail and "df-upload" not in detail and "/tmp" not in detail
    assert _left_on_disk(dirs) == []  # the upload, its extraction and the cache: all gone
    assert (db["datasets"].count_documents({}), db["datasets.files"].count_documents({})) == before


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_big_images_are_checked_one_at_a_time(stack, dirs):
    side = 4096  # max_image_pixels: the largest image accepted
    with api(stack) as c:
        warm = c.post("/api/datasets", params={"name": "warm"}, content=_dataset(_coco(2)))  # imports, first decode
        assert warm.status_code == 201, warm.text
        base = _peak_rss_mb(stack.api.pid)
        body = _dataset(_coco(12, size=(side, side)), image=_png((side, side)))
        assert len(body) < 2 << 20  # flat colour: a small upload, 12 x 64 MiB decoded
        r = c.post("/api/datasets", params={"name": "huge-images"}, content=body)
        assert r.status_code == 201, r.text
        assert r.json()["images"] == 12 and r.json()["warnings"] == []
    grew = _peak_rss_mb(stack.api.pid) - base
    # one image decoded at a time (64 MiB as RGBX) and released; keeping them all took ~800 MiB
    assert grew < 300, f"the API's peak memory grew by {grew:.0f} MiB"
    assert _left_on_disk(dirs) == []  # an accepted upload's extraction is removed too
