"""YOLO, Pascal VOC and Hugging Face imagefolder datasets load to the same canonical targets
as their COCO equivalents, are found in folders and ZIPs alike, and bad files name file and line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import DataError, load_dataset

# Sizes and boxes whose fractions are exact in binary, so YOLO's normalised numbers convert
# back to the very same pixels and targets can be compared with ==.
W, H = 64, 32
NAMES = ["cola", "water"]
# image stem -> [(class id, [x, y, w, h])]
BOXES = {
    "a": [(0, [2.0, 4.0, 16.0, 8.0]), (1, [32.0, 0.0, 8.0, 16.0])],
    "b": [(1, [0.0, 0.0, 64.0, 32.0])],
    "c": [],  # a negative: no objects
    "d": [(0, [8.0, 8.0, 4.0, 4.0])],
}
# A two-part polygon (an object split by an occluder) and a triangle, in pixels.
POLYGONS = {
    "a": [(0, [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0], [16.0, 2.0, 20.0, 2.0, 20.0, 6.0]])],
    "b": [(1, [[4.0, 4.0, 32.0, 4.0, 4.0, 28.0]])],
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))


def _png(path: Path, colour=(200, 20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), colour).save(path)


def _coco(folder: Path, boxes=BOXES, polygons=None) -> Path:
    images, anns = [], []
    for i, stem in enumerate(sorted(boxes or polygons), start=1):
        _png(folder / "images" / f"{stem}.png")
        images.append({"id": i, "file_name": f"{stem}.png", "width": W, "height": H})
        if polygons is not None:
            for cid, parts in polygons.get(stem, []):
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cid, "segmentation": parts})
        else:
            for cid, bbox in boxes[stem]:
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cid, "bbox": bbox})
    cats = [{"id": i, "name": n} for i, n in enumerate(NAMES)]
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return folder


def _yolo(folder: Path, boxes=BOXES, polygons=None, names_file="data.yaml", split_of=None) -> Path:
    for stem in sorted(boxes or polygons):
        sub = f"{split_of(stem)}/" if split_of else ""
        _png(folder / "images" / sub / f"{stem}.png")
        lines = []
        if polygons is not None:
            for cid, parts in polygons.get(stem, []):
                for part in parts:  # YOLO-seg has one polygon a line: each part is an object
                    lines.append(" ".join([str(cid)] + [f"{v / (W if k % 2 == 0 else H):g}" for k, v in enumerate(part)]))
        else:
            for cid, (x, y, w, h) in boxes[stem]:
                lines.append(f"{cid} {(x + w / 2) / W:g} {(y + h / 2) / H:g} {w / W:g} {h / H:g}")
        if lines or stem != "c":  # "c" has no label file at all: still a negative
            (folder / "labels" / sub).mkdir(parents=True, exist_ok=True)
            (folder / "labels" / sub / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if names_file == "data.yaml":
        (folder / "data.yaml").write_text("path: /somewhere/else\ntrain: images/train\nnc: 2\nnames:\n  0: cola\n  1: water\n")
    else:
        (folder / names_file).write_text("\n".join(NAMES) + "\n")
    return folder


def _voc(folder: Path, boxes=BOXES, difficult=()) -> Path:
    for stem in sorted(boxes):
        _png(folder / "JPEGImages" / f"{stem}.png")
        objects = "".join(
            f"<object><name>{NAMES[cid]}</name><difficult>{int((stem, k) in difficult)}</difficult><bndbox>"
            f"<xmin>{x + 1:g}</xmin><ymin>{y + 1:g}</ymin><xmax>{x + w:g}</xmax><ymax>{y + h:g}</ymax></bndbox></object>"
            for k, (cid, (x, y, w, h)) in enumerate(boxes[stem])
        )
        (folder / "Annotations").mkdir(parents=True, exist_ok=True)
        (folder / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    return folder


def _targets(dataset) -> dict[str, dict]:
    """Canonical targets by image stem, whatever folder the format keeps images in."""
    return {Path(s.file_name).stem: s.target for split in dataset.splits.values() for s in split}


def _load(folder, task="detect", **kw):
    return load_dataset(folder, task, fractions=(1, 0, 0), **kw)


# ------------------------------------------------------------------ same targets as COCO


@pytest.mark.parametrize("names_file", ["data.yaml", "classes.txt"])
def test_yolo_folder_loads_to_the_same_targets_as_its_coco_equivalent(tmp_path, names_file):
    coco = _load(_coco(tmp_path / "coco"))
    yolo = _load(_yolo(tmp_path / "yolo", names_file=names_file), label="yolo")
    assert yolo.categories == coco.categories == NAMES
    assert _targets(yolo) == _targets(coco)
    assert _targets(yolo)["a"]["boxes"] == [[2.0, 4.0, 18.0, 12.0], [32.0, 0.0, 40.0, 16.0]]
    assert yolo.warnings == [  # "c" has no label file: a negative, counted
        "yolo: 1 of 4 images have no label file, so they are used as negatives (no objects), as Ultralytics "
        "reads them: images/c.png. If they hold objects, add their label files"
    ]


def test_yolo_seg_polygons_load_like_coco_polygons(tmp_path):
    # YOLO-seg writes one polygon a line, so a two-part COCO object is two YOLO objects:
    # compare against the COCO set with each part as its own annotation.
    split = {stem: [(cid, [p]) for cid, parts in objs for p in parts] for stem, objs in POLYGONS.items()}
    coco = _load(_coco(tmp_path / "coco", boxes=None, polygons=split), "segment")
    yolo = _load(_yolo(tmp_path / "yolo", boxes=None, polygons=POLYGONS), "segment")
    assert _targets(yolo) == _targets(coco)
    assert _targets(yolo)["b"]["masks"] == [[4.0, 4.0, 32.0, 4.0, 4.0, 28.0]]
    assert _targets(yolo)["b"]["boxes"] == [[4.0, 4.0, 32.0, 28.0]]
    # Polygons give boxes for detection too, as Ultralytics' segments2boxes does.
    assert _targets(_load(tmp_path / "yolo"))["b"]["boxes"] == [[4.0, 4.0, 32.0, 28.0]]


def test_yolo_split_folders_define_the_splits_in_both_common_layouts(tmp_path):
    where = {"a": "train", "b": "train", "c": "valid", "d": "test"}
    ultralytics = load_dataset(_yolo(tmp_path / "u", split_of=where.get), "detect")
    assert {k: sorted(Path(s.file_name).stem for s in v) for k, v in ultralytics.splits.items()} == {
        "train": ["a", "b"], "val": ["c"], "test": ["d"]}
    # Roboflow: train/images + train/labels
    rf = tmp_path / "rf"
    for stem, split in where.items():
        _yolo(rf / split, boxes={stem: BOXES[stem]}, names_file="none.txt")
    (rf / "data.yaml").write_text("names: [cola, water]\ntrain: ../train/images\n")
    roboflow = load_dataset(rf, "detect")
    assert {k: sorted(Path(s.file_name).stem for s in v) for k, v in roboflow.splits.items()} == {
        "train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert _targets(roboflow) == _targets(ultralytics)


def test_voc_folder_loads_to_the_same_targets_and_difficult_objects_become_ignore_regions(tmp_path):
    coco = _load(_coco(tmp_path / "coco"))
    voc = _load(_voc(tmp_path / "voc"))
    assert voc.categories == coco.categories
    assert _targets(voc) == _targets(coco)

    hard = _targets(_load(_voc(tmp_path / "hard", difficult={("a", 1)})))
    assert hard["a"]["boxes"] == [[2.0, 4.0, 18.0, 12.0]]
    assert hard["a"]["crowd"] == [{"box": [32.0, 0.0, 40.0, 16.0], "label": "water"}]


def test_voc_image_sets_give_the_splits(tmp_path):
    folder = _voc(tmp_path / "voc")
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    (folder / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (folder / "ImageSets" / "Main" / "val.txt").write_text("c\n")
    (folder / "ImageSets" / "Main" / "test.txt").write_text("d\n")
    splits = load_dataset(folder, "detect").splits
    assert {k: [Path(s.file_name).stem for s in v] for k, v in splits.items()} == {
        "train": ["a", "b"], "val": ["c"], "test": ["d"]}


def _hf(folder: Path, rows: list[dict], sub: str = "") -> Path:
    for row in rows:
        _png(folder / sub / row["file_name"])
    (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / sub / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_hf_imagefolder_boxes_load_to_the_same_targets_by_name_or_by_id(tmp_path):
    coco = _load(_coco(tmp_path / "coco"))
    by_name = [{"file_name": f"{s}.png", "objects": {"bbox": [b for _, b in objs], "category": [NAMES[c] for c, _ in objs]}}
               for s, objs in BOXES.items()]
    assert _targets(_load(_hf(tmp_path / "names", by_name))) == _targets(coco)

    by_id = [{"file_name": f"{s}.png", "objects": {"bbox": [b for _, b in objs], "categories": [c for c, _ in objs]}}
             for s, objs in BOXES.items()]
    folder = _hf(tmp_path / "ids", by_id)
    (folder / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: objects\n    struct:\n    - name: categories\n"
        "      sequence:\n        class_label:\n          names:\n            '0': cola\n            '1': water\n---\n# card\n"
    )
    ds = _load(folder)
    assert ds.categories == NAMES and _targets(ds) == _targets(coco)


def test_hf_imagefolder_captions_and_split_folders(tmp_path):
    folder = tmp_path / "cap"
    _hf(folder, [{"file_name": "a.png", "text": "a red square"}, {"file_name": "b.png", "caption": "red"}], "train")
    _hf(folder, [{"file_name": "c.png", "text": "another"}], "validation")
    ds = load_dataset(folder, "caption")
    assert {k: [s.target["text"] for s in v] for k, v in ds.splits.items()} == {
        "train": ["a red square", "red"], "val": ["another"], "test": []}


def test_formats_are_found_inside_zips_like_folders(tmp_path):
    for name, make in (("yolo", _yolo), ("voc", _voc)):
        folder = make(tmp_path / name)
        archive = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for path in sorted(folder.rglob("*")):
                z.write(path, f"shelf/{path.relative_to(folder).as_posix()}")  # a folder wrapped in the ZIP
        assert _targets(_load(archive)) == _targets(_load(folder)), name


# ------------------------------------------------------------------ bad input names file and line


def test_yolo_class_id_out_of_range_names_the_file_and_line(tmp_path):
    folder = _yolo(tmp_path / "yolo")
    (folder / "labels" / "d.txt").write_text("0 0.5 0.5 0.1 0.1\n\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"labels/d\.txt line 3: class id 7 is out of range; data\.yaml names 2 classes"):
        _load(folder)


@pytest.mark.parametrize(("line", "says"), [
    ("0 0.5 0.5 0.1", "3 numbers after the class id"),
    ("0 0.5 x 0.1 0.1", "'x' is not a number"),
    ("0 0.5 nan 0.1 0.1", "finite number"),
    ("1.5 0.5 0.5 0.1 0.1", "class id 1.5 is out of range"),
])
def test_malformed_yolo_lines_name_the_file_and_line(tmp_path, line, says):
    folder = _yolo(tmp_path / "yolo")
    (folder / "labels" / "a.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=rf"yolo: labels/a\.txt line 1: .*{says}") as info:
        _load(folder, label="yolo")
    assert str(tmp_path) not in str(info.value)


def test_yolo_box_outside_the_image_is_dropped_with_a_warning_naming_file_and_line(tmp_path):
    folder = _yolo(tmp_path / "yolo")
    (folder / "labels" / "d.txt").write_text("0 0.5 0.5 0.1 0.1\n0 1.5 0.5 0.2 0.2\n")
    ds = _load(folder)
    assert len(_targets(ds)["d"]["boxes"]) == 1
    assert any("labels/d.txt line 2 has a box" in w and "outside the 64×32 image" in w for w in ds.warnings)


def test_yolo_label_files_without_an_image_are_named_and_unlabelled_images_counted(tmp_path, caplog):
    folder = _yolo(tmp_path / "yolo", split_of=lambda stem: "val" if stem == "d" else "train")
    (folder / "labels" / "train" / "b.txt").rename(folder / "labels" / "train" / "bb.txt")  # a mistyped name
    for k in range(6):
        (folder / "labels" / "val" / f"gone{k}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (folder / "labels" / "classes.txt").write_text("cola\nwater\n")  # a names file, not a label file
    ds = _load(folder, label="yolo")
    orphans, negatives = ds.warnings
    assert orphans.startswith(
        "yolo: 7 label files have no image, so their labels are not used: labels/train/bb.txt, "
        "labels/val/gone0.txt, labels/val/gone1.txt, labels/val/gone2.txt, labels/val/gone3.txt and 2 more."
    ) and "images/train/a.jpg -> labels/train/a.txt" in orphans
    assert negatives.startswith("yolo: 2 of 4 images have no label file, so they are used as negatives")
    assert "images/train/b.png, images/train/c.png." in negatives
    assert _targets(ds)["b"]["boxes"] == [] and len(_targets(ds)["a"]["boxes"]) == 2
    assert orphans in caplog.text  # in the job's log as it happens, not only in the summary
    (folder / "labels" / "train" / "bb.txt").rename(folder / "labels" / "train" / "b.txt")
    for k in range(6):
        (folder / "labels" / "val" / f"gone{k}.txt").unlink()
    assert _load(folder, label="yolo").warnings == [negatives.replace("2 of 4", "1 of 4").replace("images/train/b.png, ", "")]


def test_yolo_names_file_errors_say_what_to_fix(tmp_path):
    folder = _yolo(tmp_path / "yolo")
    (folder / "data.yaml").unlink()
    with pytest.raises(DataError, match=r"labels/ looks like a YOLO folder, but no data\.yaml or classes\.txt names"):
        _load(folder)
    (folder / "data.yaml").write_text("nc: 3\nnames: [cola, water]\n")
    with pytest.raises(DataError, match=r'data\.yaml: "nc" is 3 but "names" lists 2 classes'):
        _load(folder)
    (folder / "data.yaml").write_text("names: [cola\n")
    with pytest.raises(DataError, match=r"data\.yaml: invalid YAML at line 2"):
        _load(folder)


def test_voc_box_outside_the_image_names_the_xml_and_the_object(tmp_path):
    folder = _voc(tmp_path / "voc", boxes={"a": [(0, [2.0, 4.0, 16.0, 8.0]), (1, [50.0, 20.0, 40.0, 40.0])]})
    ds = _load(folder)
    assert _targets(ds)["a"]["boxes"] == [[2.0, 4.0, 18.0, 12.0]]
    assert any("Annotations/a.xml object 2 ('water') has a box" in w and "outside the 64×32 image" in w
               for w in ds.warnings), ds.warnings


def _voc_xml(stem: str, size: tuple[int, int], box: list[int], filename: str | None = None) -> str:
    x1, y1, x2, y2 = box
    return (f"<annotation><filename>{filename or stem + '.jpg'}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size><object><name>cola</name><bndbox><xmin>{x1 + 1}"
            f"</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>")


def test_voc_size_that_is_not_the_images_is_an_error_naming_the_file_and_both_sizes(tmp_path):
    folder = _voc(tmp_path / "voc")
    (folder / "Annotations" / "a.xml").write_text(_voc_xml("a", (640, 480), [2, 4, 18, 12], "a.png"))
    with pytest.raises(DataError, match=r"^voc: Annotations/a\.xml: <size> says 640×480 but JPEGImages/a\.png is "
                       r"64×32, so its boxes were drawn on another image"):
        _load(folder, label="voc")
    # width and height swapped, with no EXIF orientation to explain it: another image too
    (folder / "Annotations" / "a.xml").write_text(_voc_xml("a", (32, 64), [2, 4, 18, 12], "a.png"))
    with pytest.raises(DataError, match=r"a\.xml: <size> says 32×64 but JPEGImages/a\.png is 64×32, so"):
        _load(folder, label="voc")
    (folder / "Annotations" / "a.xml").write_text(_voc_xml("a", (64, 32), [2, 4, 18, 12], "a.png").replace(
        "<height>32</height>", "<height>3.5</height>"))
    with pytest.raises(DataError, match=r"a\.xml: <size> <height> must be a whole number of pixels, got '3\.5'"):
        _load(folder, label="voc")


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_voc_boxes_on_a_sideways_photo_as_stored_are_turned_upright_with_it(tmp_path, orientation):
    # A phone photo stored 48×32 whose EXIF orientation turns it upright to 32×48; a tool that
    # labelled the stored pixels writes <size> 48×32 and boxes on them.
    stored, box = (48, 32), [4, 6, 20, 14]
    photo = Image.new("RGB", stored, (128, 128, 128))
    photo.paste((230, 20, 20), tuple(box))
    folder = tmp_path / "voc"
    (folder / "JPEGImages").mkdir(parents=True)
    (folder / "Annotations").mkdir()
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo.save(folder / "JPEGImages" / "p.jpg", quality=98, subsampling=0, exif=exif)  # 4:4:4: crisp edges
    (folder / "Annotations" / "p.xml").write_text(_voc_xml("p", stored, box))
    ds = _load(folder, label="voc")
    (sample,) = [s for split in ds.splits.values() for s in split]
    assert sample.image.size == (32, 48)
    (x1, y1, x2, y2) = [int(v) for v in sample.target["boxes"][0]]
    assert (x2 - x1, y2 - y1) == (8, 16)  # turned: the 16×8 box stands up
    pixels = np.asarray(sample.image).astype(int)
    inside, outside = pixels[y1:y2, x1:x2], pixels.copy()
    outside[y1:y2, x1:x2] = (128, 128, 128)
    assert np.abs(inside - (230, 20, 20)).max() < 40  # the box lies on the red patch, upright
    assert np.abs(outside - 128).max() < 40  # and nothing red is left outside it
    assert ds.warnings == ["voc: 1 annotation file(s) give the size of their image as stored, before its EXIF "
                           "orientation turns it upright (Annotations/p.xml); their boxes are turned upright with the image"]
    # labelled upright (what most tools show): <size> is the upright size and boxes are kept as they are
    (folder / "Annotations" / "p.xml").write_text(_voc_xml("p", (32, 48), [4, 6, 12, 22]))
    ds = _load(folder, label="voc")
    assert _targets(ds)["p"]["boxes"] == [[4.0, 6.0, 12.0, 22.0]] and ds.warnings == []


@pytest.mark.parametrize(("xml", "says"), [
    ("<annotation><object><name>cola</name>", r"Annotations/a\.xml: not valid XML at line 1"),
    ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", r"a\.xml: object 1 has no <name>"),
    ("<annotation><object><name>cola</name><bndbox><xmin>1</xmin><ymin>one</ymin><xmax>3</xmax><ymax>4</ymax>"
     "</bndbox></object></annotation>", r"a\.xml: object 1 \('cola'\): <ymin> must be a number, got 'one'"),
    ('<!DOCTYPE lol [<!ENTITY a "aaaa">]><annotation><filename>&a;</filename></annotation>', "DOCTYPE"),
])
def test_malformed_voc_files_name_the_xml_and_object(tmp_path, xml, says):
    folder = _voc(tmp_path / "voc")
    (folder / "Annotations" / "a.xml").write_text(xml)
    with pytest.raises(DataError, match=says):
        _load(folder)


@pytest.mark.parametrize(("row", "says"), [
    ('{"file_name": "a.png", "objects": {"bbox": [[1, 2, 3]], "category": ["cola"]}}', r"line 2, object 1: bbox must be"),
    ('{"file_name": "a.png", "objects": {"bbox": [[1, 2, 3, 4]], "category": []}}', r"line 2: \"objects\" needs"),
    ('{"file_name": "a.png", "objects": {"bbox": [[1, 2, 3, 4]], "category": [0]}}', r"line 2: category 0 is an id but nothing names"),
    ('{"file_name": "../a.png"}', r"line 2: \"file_name\" must be"),
    ('{"file_name": "a.png",', r"metadata\.jsonl line 2, column \d+: invalid JSON"),
])
def test_malformed_hf_metadata_names_the_line(tmp_path, row, says):
    folder = _hf(tmp_path / "hf", [{"file_name": "b.png", "objects": {"bbox": [], "category": []}}])
    with open(folder / "metadata.jsonl", "a") as f:
        f.write(row + "\n")
    with pytest.raises(DataError, match=says):
        _load(folder)
