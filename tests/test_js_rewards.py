"""JavaScript rewards: the helper library equals the Python built-ins, every hostile reward
gets a clear RewardError in seconds, and the sandbox stays healthy (the next call works)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from pipeline.geometry import box_iou, center_distance, hungarian_match, oks, polygon_mask_iou
from pipeline.rewards.base import RewardError, as_trl_reward
from pipeline.rewards.builtin import f1_at, get_reward, soft_iou
from pipeline.rewards.js import EXAMPLES, JsLimits, JsReward, check_js_reward, load_js_reward
from pipeline.rewards.probe import CASES, probe_reward

FAST = JsLimits(batch_timeout_s=1.5, sample_timeout_ms=500, load_timeout_s=1.5, heap_mb=64)
GT = {"boxes": [[4, 4, 20, 20]], "labels": ["a"], "points": [], "keypoints": [], "masks": [], "text": "",
      "image": {"width": 64, "height": 64}}  # fmt: skip


def rand_box(rng: random.Random, w: int = 64, h: int = 64) -> list[float]:
    x1, y1 = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
    return [round(x1, 2), round(y1, 2), round(rng.uniform(x1, w), 2), round(rng.uniform(y1, h), 2)]


def rand_target(rng: random.Random, n: int | None = None, labels=("a", "b")) -> dict:
    n = rng.randint(0, 5) if n is None else n
    return {"boxes": [rand_box(rng) for _ in range(n)], "labels": [rng.choice(labels) for _ in range(n)], "points": [],
            "keypoints": [], "masks": [], "text": "", "image": {"width": 64, "height": 64}}  # fmt: skip


def js(source: str, **kw) -> JsReward:
    return JsReward(source, kw.pop("name", "test.js"), limits=kw.pop("limits", FAST), **kw)


@pytest.fixture(scope="module")
def rng():
    return random.Random(1234)


# -- the helper library against the Python built-ins ------------------------------------
def test_iou_center_distance_and_match_boxes_equal_python(rng):
    pairs = [(rand_target(rng), rand_target(rng)) for _ in range(200)]
    r = js("""function rewardBatch(pairs) {
        return pairs.map(([o, g]) => {
          const a = o.boxes[0] || [0, 0, 0, 0], b = g.boxes[0] || [0, 0, 0, 0];
          const m = matchBoxes(o.boxes, g.boxes, 0.3);
          // pack: iou, centre distance, number of matches, their summed IoU (four numbers, one score)
          return iou(a, b) * 1e6 + centerDistance(a, b) * 1e3 + m.length * 1e-1 + m.reduce((s, x) => s + x.iou, 0) * 1e-3;
        });
      }""")
    try:
        got = r.score([o for o, _ in pairs], [g for _, g in pairs])
    finally:
        r.close()
    for (o, g), v in zip(pairs, got):
        a, b = (o["boxes"] or [[0, 0, 0, 0]])[0], (g["boxes"] or [[0, 0, 0, 0]])[0]
        m = hungarian_match(o["boxes"], g["boxes"], 0.3)
        want = box_iou(a, b) * 1e6 + center_distance(a, b) * 1e3 + len(m) * 1e-1 + sum(x[2] for x in m) * 1e-3
        assert v == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_soft_iou_and_f1_equal_the_builtin_rewards(rng):
    pairs = [(rand_target(rng), rand_target(rng)) for _ in range(300)]
    outs, gts = [o for o, _ in pairs], [g for _, g in pairs]
    for src, want in [("function reward(o, g) { return softIoU(o, g); }", [soft_iou(o, g) for o, g in pairs]),
                      ("function reward(o, g) { return f1(o, g, 0.5); }", [f1_at(o, g, 0.5) for o, g in pairs]),
                      ("function reward(o, g) { return f1(o, g, 0.3, false); }",
                       [f1_at(o, g, 0.3, class_aware=False) for o, g in pairs])]:  # fmt: skip
        r = js(src)
        try:
            assert r.score(outs, gts) == pytest.approx(want, abs=1e-12), src
        finally:
            r.close()
    # the shipped IoU example is the built-in `iou` reward
    r = load_js_reward("example:iou", limits=FAST)
    try:
        assert r.score(outs, gts) == pytest.approx(get_reward("iou").score(outs, gts), abs=1e-12)
    finally:
        r.close()


def test_mask_iou_rasterises_exactly_like_pycocotools(rng):
    def poly(n_vertices: int) -> list[float]:
        cx, cy, rad = rng.uniform(10, 50), rng.uniform(10, 50), rng.uniform(3, 20)
        import math

        pts = []
        for k in range(n_vertices):
            ang = 2 * math.pi * k / n_vertices + rng.uniform(-0.3, 0.3)
            rr = rad * rng.uniform(0.5, 1.0)
            pts += [round(cx + rr * math.cos(ang), 2), round(cy + rr * math.sin(ang), 2)]
        return pts

    pairs = [(poly(rng.randint(3, 9)), poly(rng.randint(3, 9))) for _ in range(120)]
    pairs += [([0, 0, 10, 0, 10, 10, 0, 10], [0, 0, 5, 0, 5, 10, 0, 10]), ([0, 0, 10, 0, 10, 10, 0, 10],) * 2]
    outs = [{**GT, "masks": [a]} for a, _ in pairs]
    gts = [{**GT, "masks": [b]} for _, b in pairs]
    r = js("function reward(o, g) { return maskIoU(o.masks[0], g.masks[0], g.image.width, g.image.height); }")
    try:
        got = r.score(outs, gts)
    finally:
        r.close()
    want = [polygon_mask_iou(a, b, 64, 64) for a, b in pairs]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[-2:] == [0.5, 1.0]


def test_oks_equals_python(rng):
    cases = []
    for _ in range(100):
        k = rng.randint(1, 6)
        g = [[rng.uniform(0, 64), rng.uniform(0, 64), rng.choice([0, 2, 2])] for _ in range(k)]
        p = [[x + rng.gauss(0, 2), y + rng.gauss(0, 2), rng.choice([0, 2, 2, 2])] for x, y, _ in g]
        cases.append((p, g, rng.uniform(20, 900)))
    outs = [{**GT, "keypoints": [p]} for p, _, _ in cases]
    gts = [{**GT, "keypoints": [g], "area": a} for _, g, a in cases]
    r = js("function reward(o, g) { return oks(o.keypoints[0], g.keypoints[0], g.area); }")
    try:
        assert r.score(outs, gts) == pytest.approx([oks(p, g, a) for p, g, a in cases], abs=1e-12)
    finally:
        r.close()


# -- hostile rewards: a clear error in seconds, and the next call works -----------------
HOSTILE = {
    "endless loop": ("function reward(o, g) { while (true) {} }", "batch limit"),
    "endless async loop": ("function reward(o, g) { (async () => { while (true) { await null } })(); return 1 }",
                           "keeps running after it returns"),
    "array bomb": ("function reward(o, g) { const a = []; while (true) a.push(new Array(1e6).fill(1)); }", "memory"),
    "string bomb": ("function reward(o, g) { const s = 'x'.repeat(2 ** 28); return s.split('').length }", "memory"),
    "arraybuffer bomb": ("function reward(o, g) { const b = []; while (true) b.push(new ArrayBuffer(2 ** 28)); }",
                         "Array buffer allocation failed"),
    "deep recursion": ("function reward(o, g) { function f(n) { return f(n + 1) + 1 } return f(0) }",
                       "Maximum call stack size exceeded"),
    "throw": ("function reward(o, g) {\n  const n = o.boxes.length;\n  throw new Error('bad ' + n);\n}", "Error: bad 1 at line 3"),
    "NaN": ("function reward(o, g) { return NaN }", "returned NaN, not a finite number"),
    "Infinity": ("function reward(o, g) { return 1 / 0 }", "returned Infinity"),
    "string": ("function reward(o, g) { return '1' }", "returned a string"),
    "array": ("function reward(o, g) { return [1] }", "returned an array"),
    "object": ("function reward(o, g) { return {score: 1} }", "returned a value of type object"),
    "promise": ("function reward(o, g) { return (async () => 1)() }", "returned a Promise"),
    "no return": ("function reward(o, g) { o.boxes.length }", "forget to `return`"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_reward_gets_a_clear_error_and_the_sandbox_recovers(case):
    source, expected = HOSTILE[case]
    # a reward that is fine on the load-time sample (no boxes) and hostile on real data
    guarded = source.replace("function reward(o, g) {", "function reward(o, g) { if (o.boxes.length === 0) return 0.5;", 1)
    r = js(guarded, name=case)
    empty = {**GT, "boxes": [], "labels": []}
    try:
        assert r.score([empty], [GT]) == [0.5]  # loads and scores
        with pytest.raises(RewardError) as err:
            r.score([GT, GT], [GT, GT])
        msg = str(err.value)
        assert expected in msg and f"reward {case!r} failed" in msg, msg
        if case not in ("endless async loop",):
            assert err.value.index == 0, msg  # the first sample is named
        assert r.score([empty, empty], [GT, GT]) == [0.5, 0.5]  # the next call works
    finally:
        r.close()


# Each poisons what the harness used to serialise the scores with, in the ways that got NaN
# stored, a 500 (a string score, extra or missing scores), or a silent 0.
POISON = {
    "toJSON forging NaN and Infinity at load": (
        "Object.prototype.toJSON = function () { delete Object.prototype.toJSON;"
        " return {scores: ['NaN', 'Infinity'], errors: []} };"),
    "toJSON forging a string score": (
        "Object.prototype.toJSON = function () { delete Object.prototype.toJSON;"
        " return {scores: ['1', 'x'], errors: []} };"),
    "toJSON forging extra scores": (
        "Object.prototype.toJSON = function () { delete Object.prototype.toJSON;"
        " return {scores: [1, 2, 3], errors: []} };"),
    "toJSON dropping the scores": (
        "Object.prototype.toJSON = function () { delete Object.prototype.toJSON; return {scores: [], errors: []} };"),
    "replaced built-ins": (
        "Number.prototype.toString = () => 'NaN'; String.prototype.slice = () => 'NaN'; Array.prototype.join = () => 'NaN';"
        " JSON.stringify = () => '{\"scores\": [NaN, NaN], \"errors\": []}'; Float64Array = Array;"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(POISON))
def test_user_code_cannot_forge_the_scores_that_leave_the_sandbox(case):
    r = js(POISON[case] + "\nfunction reward(o, g) { return o.labels.length / 4 }", name=case)
    try:
        assert r.score([GT, {**GT, "labels": ["a", "b"]}], [GT, GT]) == [0.25, 0.5]
    finally:
        r.close()
    # a reward that returns NaN and poisons the answer to hide it is still caught
    r = js("function reward(o, g) { if (o.boxes.length === 0) return 1;"
           " Object.prototype.toJSON = function () { return {scores: ['NaN'], errors: []} }; return NaN }")  # fmt: skip
    try:
        with pytest.raises(RewardError, match="failed on sample 0: returned NaN, not a finite number"):
            r.score([GT], [GT])
    finally:
        r.close()


def test_the_python_side_checks_every_answer_of_the_sandbox():
    r = js("function reward(o, g) { return 1 }")
    for body, why in [(b'{"scores": [NaN], "errors": []}', "not JSON"), (b'{"scores": ["NaN"], "errors": []}', "score 0 is str"),
                      (b'{"scores": [1e999], "errors": []}', "not JSON"), (b'{"scores": [true], "errors": []}', "score 0 is bool"),
                      (b'{"scores": [1, 2], "errors": []}', "2 scores for 1 samples"), (b'{"scores": []}', "0 scores for 1"),
                      (b'{"scores": [null], "errors": [{"index": 5}]}', "names sample 5 of 1"), (b"[1]", "no list of scores")]:  # fmt: skip
        with pytest.raises(RewardError, match="malformed result") as err:
            r._checked(body, 1)
        assert why in str(err.value), (body, str(err.value))
    err = {"index": 1, "message": "m"}
    assert r._checked(b'{"scores": [0.5, null], "errors": [{"index": 1, "message": "m"}]}', 2) == ([0.5, None], [(1, err)])


def test_a_huge_error_message_is_trimmed_inside_the_sandbox():
    r = js("function reward(o, g) { if (o.boxes.length === 0) return 1; throw new Error('x'.repeat(2 ** 26)) }",
           limits=JsLimits(batch_timeout_s=5, sample_timeout_ms=4000, heap_mb=256))  # fmt: skip
    try:
        with pytest.raises(RewardError, match="failed on sample 0: Error: xxx") as err:
            r.score([GT] * 3, [GT] * 3)
        assert len(str(err.value)) < 1000
        assert r.limits.max_result_bytes(3) < 128 * 1024  # what the worker and the parent let through
    finally:
        r.close()


def test_a_batch_where_every_sample_fails_fails_even_under_the_zero_policy():
    r = js("function reward(o, g) { if (o.labels[0] === 'boom') throw new Error('nope'); return 0.75 }", on_error="zero")
    bad = {**GT, "labels": ["boom"]}
    try:
        assert r.score([GT, bad], [GT, GT]) == [0.75, 0.0]  # some signal: the failure scores 0
        with pytest.raises(RewardError, match=r"every sample of the batch failed \(3 of 3\).*Error: nope"):
            r.score([bad] * 3, [GT] * 3)
    finally:
        r.close()


def test_the_memory_limit_bounds_buffers_outside_the_v8_heap_too():
    # reward_memory_mb = 256: a 1 GiB ArrayBuffer (allocated outside V8's heap) is refused,
    # while a reward using less than its limit still runs
    src = "function reward(o, g) { const b = new ArrayBuffer(o.boxes.length * 2 ** 20); new Uint8Array(b).fill(1); return 1 }"
    r = js(src, limits=JsLimits(heap_mb=256, sample_timeout_ms=5000, batch_timeout_s=5))
    try:
        assert r.score([{**GT, "boxes": [[0, 0, 1, 1]] * 128}], [GT]) == [1.0]  # 128 MiB: fits
        with pytest.raises(RewardError, match="Array buffer allocation failed"):
            r.score([{**GT, "boxes": [[0, 0, 1, 1]] * 1024}], [GT])  # 1 GiB
    finally:
        r.close()


def test_an_endless_async_loop_at_load_is_stopped_at_the_stated_limit():
    import time

    r = js("(async () => { while (true) { await null } })();\nfunction reward(o, g) { return 1 }")
    t0 = time.monotonic()
    with pytest.raises(RewardError, match="failed to load: ran past the 1.5 s limit while loading"):
        r.score([GT], [GT])
    took = time.monotonic() - t0
    r.close()
    assert took < 1.5 + 1.5, took  # the limit, the kill grace (1 s) and starting the worker


def test_the_trl_adapter_refuses_non_finite_scores_from_any_reward():
    from pipeline.codec import Codec

    class Broken:  # a reward outside the sandbox (e.g. a plugin) that returns NaN
        name = "broken"

        def score(self, outs, gts):
            return [0.5, float("nan")]

    f = as_trl_reward(Broken(), Codec("detect", ["a"]))
    gt = json.dumps(GT)
    with pytest.raises(RewardError, match="'broken' failed on sample 1: returned 'nan', not a finite number"):
        f(["a<loc_0><loc_0><loc_3><loc_3>"] * 2, gt=[gt, gt])


def test_syntax_error_names_line_and_column():
    with pytest.raises(RewardError) as err:
        check_js_reward("function reward(out, gt) {\n  return out.boxes.length +;\n}", "mine.js")
    assert err.value.line == 2 and err.value.column == 28
    assert "failed to load: SyntaxError: Unexpected token ';' at line 2, column 28" in str(err.value)


def test_missing_reward_and_endless_top_level_fail_at_load():
    with pytest.raises(RewardError, match="defines neither `function reward"):
        check_js_reward("function rewrd(out, gt) { return 1 }")
    r = js("while (true) {}\nfunction reward(o, g) { return 1 }")
    with pytest.raises(RewardError, match="failed to load: ran past the 1.5 s limit while loading"):
        r.score([GT], [GT])
    r.close()


def test_oversized_output_is_refused_and_per_sample_time_limit():
    r = js("function reward(o, g) { if (o.boxes.length > 1) { const t = Date.now(); while (Date.now() - t < 80) {} } return 1 }",
           limits=JsLimits(sample_timeout_ms=50, max_sample_bytes=4096))  # fmt: skip
    try:
        huge = {**GT, "boxes": [[0, 0, 1, 1]] * 1000, "labels": ["a"] * 1000}
        with pytest.raises(RewardError, match=r"failed on sample 1: the output is about \d+ KiB, over the 4 KiB"):
            r.score([GT, huge], [GT, GT])
        slow = {**GT, "boxes": [[0, 0, 1, 1]] * 2, "labels": ["a"] * 2}
        with pytest.raises(RewardError, match="failed on sample 0: took .* ms, over the 50 ms per-sample limit"):
            r.score([slow, GT], [GT, GT])
    finally:
        r.close()


def test_zero_policy_scores_failures_0_and_counts_them():
    seen = []
    r = js("function reward(o, g) { if (o.labels[0] === 'boom') throw new Error('nope'); return 0.75 }",
           on_error="zero", on_sample_error=seen.append)  # fmt: skip
    try:
        bad = {**GT, "labels": ["boom"]}
        assert r.score([GT, bad, GT, bad], [GT] * 4) == [0.75, 0.0, 0.75, 0.0]
        assert r.errors == 2 and [e.index for e in seen] == [1, 3]
        assert "Error: nope at line 1" in str(seen[0])
        # an endless loop on one sample: that sample scores 0, the rest of the batch is still scored
        loop = js("function reward(o, g) { if (o.labels[0] === 'boom') while (true) {} return 0.25 }", on_error="zero")
        assert loop.score([GT, bad, GT], [GT] * 3) == [0.25, 0.0, 0.25] and loop.errors == 1
        loop.close()
    finally:
        r.close()


# -- isolation --------------------------------------------------------------------------
def test_a_reward_cannot_read_files_open_sockets_or_reach_the_trainer(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    probes = [
        "typeof require", "typeof process", "typeof fetch", "typeof XMLHttpRequest", "typeof WebSocket",
        "typeof setTimeout", "typeof WebAssembly", "typeof SharedArrayBuffer", "typeof Deno", "typeof Bun",
    ]  # fmt: skip
    src = "function reward(o, g) { return [" + ", ".join(probes) + "].every(t => t === 'undefined') ? 1 : 0 }"
    assert check_js_reward(src) == 1.0
    # dynamic import has no module loader behind it: no fs, no net, no file URL
    src = f"""var result = 'not run';
      import('fs').then(() => {{ result = 'fs' }}, e => {{ result = 'refused' }});
      import('file://{secret}').then(() => {{ result = 'file' }}, e => {{ result = result === 'fs' ? 'fs' : 'refused' }});
      function reward(o, g) {{ return result === 'fs' || result === 'file' ? 0 : 1 }}"""
    assert check_js_reward(src) == 1.0
    # the worker's environment carries nothing of ours (database URIs, tokens)
    os.environ["MONGODB_URI"] = "mongodb://secret"
    try:
        r = js("function reward(o, g) { return 1 }")
        r.score([GT], [GT])
        env = open(f"/proc/{r._proc.pid}/environ", "rb").read()
        assert b"MONGODB_URI" not in env and b"secret" not in env
        r.close()
    finally:
        del os.environ["MONGODB_URI"]


def test_fresh_context_per_job_reused_within_a_job_and_seeded_random():
    src = """var calls = 0;
      function reward(o, g) {
        calls += 1;
        if (Object.prototype.pwned) return -1;   // another job's prototype change must not leak in
        Object.prototype.pwned = true;
        return calls * 1000 + Math.floor(Math.random() * 1000);
      }"""
    a, b, c = js(src, seed=7), js(src, seed=7), js(src, seed=8)
    try:
        first = a.score([GT], [GT])[0]
        assert a.score([GT], [GT])[0] == -1  # same job: the context (and its globals) is reused
        assert b.score([GT], [GT])[0] == first  # a new job: fresh context, same seed, same random
        assert c.score([GT], [GT])[0] != first  # another seed
    finally:
        for r in (a, b, c):
            r.close()


def test_trl_adapter_scores_completions_in_one_batched_call():
    from pipeline.codec import Codec

    codec = Codec("detect", ["a"])
    r = load_js_reward("example:iou", limits=FAST)
    f = as_trl_reward(r, codec)
    gt = json.dumps({**GT, "boxes": [[0, 0, 32, 32]]})
    assert f.__name__ == "iou.js"
    assert f([[{"role": "assistant", "content": "a<loc_0><loc_0><loc_15><loc_15>"}], "garbage"], gt=[gt, gt]) == [1.0, 0.0]
    r.close()


def test_a_gt_shared_by_a_group_crosses_once_and_each_pair_gets_its_own_copy():
    from pipeline.codec import Codec

    # A reward that consumes gt in place: with one object shared across the group, the second
    # completion would see an emptied gt. Each pair must see the gt as sent.
    src = """function reward(o, g) {
        const n = g.boxes.length;
        while (g.boxes.length) g.boxes.pop();
        g.labels.push('x');
        return n * 10 + g.labels.length;
      }"""
    r = js(src)
    f = as_trl_reward(r, Codec("detect", ["a"]))
    try:
        two = {**GT, "boxes": [[0, 0, 8, 8], [8, 8, 16, 16]], "labels": ["a", "a"]}
        gt_a, gt_b = json.dumps(two), json.dumps(GT)
        completions = ["a<loc_0><loc_0><loc_3><loc_3>"] * 6
        # the gt column as GRPO passes it: the prompt's gt repeated for each completion
        assert f(completions, gt=[gt_a, gt_a, gt_a, gt_b, gt_b, gt_a]) == [23, 23, 23, 12, 12, 23]
        shared = dict(GT)  # the same dict object three times, straight through the Reward API
        assert r.score([GT, GT, GT], [shared, shared, shared]) == [12, 12, 12]
        assert shared["boxes"] == GT["boxes"]  # and the Python side is untouched
    finally:
        r.close()


def test_a_batch_bigger_than_the_sample_limit_still_refuses_only_the_oversized_sample():
    limits = JsLimits(batch_timeout_s=5, sample_timeout_ms=500, heap_mb=64, max_sample_bytes=4096)
    r = js("function reward(o, g) { return o.boxes.length }", limits=limits, on_error="zero")
    try:
        small = {**GT, "boxes": [[1, 2, 3, 4]] * 3}
        huge = {**GT, "boxes": [[1, 2, 3, 4]] * 400}
        assert r.score([small] * 4, [GT] * 4) == [3, 3, 3, 3]  # 4 small samples: under the limit together
        many = [small] * 40  # together over the limit, each under it: all scored
        assert r.score(many, [GT] * 40) == [3] * 40 and r.errors == 0
        assert r.score([small, huge, small], [GT] * 3) == [3, 0, 3] and r.errors == 1
    finally:
        r.close()


# -- the examples and `dreamforge reward test` ------------------------------------------
def test_every_example_loads_and_ranks_the_exact_prediction_first():
    rng = random.Random(5)
    targets = [rand_target(rng, n=rng.randint(1, 4), labels=("cola", "soap")) for _ in range(12)]
    names = sorted(p.stem for p in EXAMPLES.glob("*.js"))
    assert names == ["f1_class_penalty", "iou", "medical_miss_penalty", "retail_facings"]
    for name in names:
        r = load_js_reward(f"example:{name}", limits=FAST)
        try:
            rows = {row["case"]: row for row in probe_reward(r, targets)}
        finally:
            r.close()
        assert list(rows) == list(CASES)
        assert rows["exact"]["mean"] == 1.0 and all(rows[c]["mean"] < 1.0 for c in CASES[1:]), (name, rows)
    med = load_js_reward("example:medical_miss_penalty", limits=FAST)
    rows = {row["case"]: row["mean"] for row in probe_reward(med, targets)}
    med.close()
    assert rows["missing"] < rows["extra"]  # a miss costs more than a false alarm


def test_reward_test_cli_prints_the_table_and_fails_on_errors(tmp_path, root):
    ds = "synthetic://retail-shelf?n=16&seed=3"
    run = subprocess.run([sys.executable, "-m", "dreamforge.cli", "reward", "test", "example:retail_facings",
                          "--dataset", ds, "--samples", "6", "--json"], capture_output=True, text=True, cwd=root)  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = json.loads(run.stdout)
    assert [c["case"] for c in table["cases"]] == list(CASES) and table["samples"] == 6
    bad = tmp_path / "bad.js"
    bad.write_text("function reward(out, gt) {\n  return out.boxes[9][0];\n}\n")
    run = subprocess.run([sys.executable, "-m", "dreamforge.cli", "reward", "test", str(bad), "--dataset", ds],
                         capture_output=True, text=True, cwd=root)  # fmt: skip
    assert run.returncode == 1
    assert "reward 'bad.js' failed on sample 0: TypeError" in run.stderr and "at line 2" in run.stderr


# -- the RL stage trains against a JavaScript reward -------------------------------------
def test_rl_stage_trains_against_a_javascript_reward_and_a_broken_one_fails_first(tmp_path):
    from conftest import tiny_job_config

    from pipeline.config import build_config
    from pipeline.job import run_job
    from pipeline.reporter import MetricsFileReporter

    cfg = build_config(tiny_job_config(reward="example:iou"))
    reporter = MetricsFileReporter(tmp_path / "job" / "events.jsonl")
    rec = run_job(cfg, tmp_path / "job", stages=[3], reporter=reporter)
    reporter.close()
    st = rec["stages"]["reward"]
    assert rec["reward"] == "iou.js" and st["steps"] == 2 and st["reward_errors"] == 0 and st["reward_seconds"] > 0
    events = [json.loads(x) for x in (tmp_path / "job" / "events.jsonl").read_text().splitlines()]
    assert any("rewards/iou.js/mean" in e for e in events if e["type"] == "metric")
    bad = tmp_path / "bad.js"
    bad.write_text("function reward(out, gt) {\n  return out.boxes[0].x.y;\n}\n")
    with pytest.raises(RewardError, match=r"failed on sample 0: TypeError: .* at line 2"):
        run_job(build_config(tiny_job_config(reward=str(bad))), tmp_path / "bad", stages=[3])
    assert not (tmp_path / "bad" / "stages" / "reward" / "model").exists()  # nothing trained
