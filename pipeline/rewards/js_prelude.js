// DreamForge reward sandbox prelude: evaluated in every fresh V8 context before the user's
// reward. It defines the helper library users call and the batch harness the Python side
// calls. Everything here mirrors pipeline/geometry.py and pipeline/rewards/scores.py
// (same conventions, same numbers; tests/test_js_rewards.py checks them against Python).
//
// Conventions: boxes are [x1, y1, x2, y2] in original-image pixels, half-open (x2 is the
// first column outside the box), so iou(b, b) === 1 and a box with no area scores 0.
"use strict";

(function (g) {
  // Built-ins the harness needs, captured before user code can replace them.
  const stringify = JSON.stringify, parse = JSON.parse;
  const isFinite_ = Number.isFinite;
  const now = Date.now;
  const isArray = Array.isArray;
  const ArrayOf = Array, F64 = Float64Array, U8 = Uint8Array, toStr = String;
  // A bound call keeps the original method even if String.prototype.slice is replaced later.
  const sliceOf = Function.prototype.call.bind(String.prototype.slice);
  const MESSAGE_CHARS = 500, STACK_CHARS = 1000; // what an error may carry out (js.py caps the result)
  const mathExp = Math.exp, mathMax = Math.max, mathMin = Math.min, mathAbs = Math.abs;
  const mathFloor = Math.floor, mathCeil = Math.ceil, mathTrunc = Math.trunc, mathHypot = Math.hypot;

  function boxArea(b) {
    const w = b[2] - b[0], h = b[3] - b[1];
    return w > 0 && h > 0 ? w * h : 0;
  }

  /** IoU of two half-open xyxy boxes; 0 when either has no area. */
  function iou(a, b) {
    const aa = boxArea(a), ab = boxArea(b);
    if (aa === 0 || ab === 0) return 0;
    const iw = mathMin(a[2], b[2]) - mathMax(a[0], b[0]);
    const ih = mathMin(a[3], b[3]) - mathMax(a[1], b[1]);
    if (iw <= 0 || ih <= 0) return 0;
    const inter = iw * ih;
    return inter / (aa + ab - inter);
  }

  /** Euclidean distance between the centres of two xyxy boxes, in pixels. */
  function centerDistance(a, b) {
    return mathHypot((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2);
  }

  // Work arrays of the Hungarian method, reused across calls: allocating six typed arrays per
  // image cost more than the assignment itself on the few-object images rewards see.
  const scratch = { size: 0 };
  function grow(size) {
    scratch.size = size;
    scratch.u = new Float64Array(size); scratch.v = new Float64Array(size);
    scratch.p = new Int32Array(size); scratch.way = new Int32Array(size);
    scratch.minv = new Float64Array(size); scratch.used = new Uint8Array(size);
  }

  /**
   * Maximum-weight one-to-one assignment on a similarity matrix (rows: predictions,
   * columns: ground truth); returns [[row, col], ...] for every row. The Hungarian method
   * with potentials, O(n^3), on the matrix padded to a square with zeros.
   */
  function hungarian(sim) {
    const n = sim.length, m = n ? sim[0].length : 0, k = mathMax(n, m);
    if (n === 0 || m === 0) return [];
    // Small cases by enumeration (most images hold a few objects): same optimum, no allocation.
    if (n === 1 || m === 1) {
      let bi = 0, bj = 0;
      for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) if (sim[i][j] > sim[bi][bj]) { bi = i; bj = j; }
      return [[bi, bj]];
    }
    if (n === 2 && m === 2) {
      return sim[0][0] + sim[1][1] >= sim[0][1] + sim[1][0] ? [[0, 0], [1, 1]] : [[0, 1], [1, 0]];
    }
    const INF = Infinity;
    const cost = (i, j) => (i < n && j < m ? -sim[i][j] : 0);
    if (k + 1 > scratch.size) grow(k + 1);
    const u = scratch.u, v = scratch.v, p = scratch.p, way = scratch.way, minv = scratch.minv, used = scratch.used;
    u.fill(0, 0, k + 1); v.fill(0, 0, k + 1); p.fill(0, 0, k + 1); way.fill(0, 0, k + 1);
    for (let i = 1; i <= k; i++) {
      p[0] = i;
      let j0 = 0;
      minv.fill(INF, 0, k + 1);
      used.fill(0, 0, k + 1);
      do {
        used[j0] = 1;
        const i0 = p[j0];
        let delta = INF, j1 = 0;
        for (let j = 1; j <= k; j++) {
          if (used[j]) continue;
          const cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
          if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
          if (minv[j] < delta) { delta = minv[j]; j1 = j; }
        }
        for (let j = 0; j <= k; j++) {
          if (used[j]) { u[p[j]] += delta; v[j] -= delta; } else { minv[j] -= delta; }
        }
        j0 = j1;
      } while (p[j0] !== 0);
      do { const j1 = way[j0]; p[j0] = p[j1]; j0 = j1; } while (j0);
    }
    const pairs = [];
    for (let j = 1; j <= k; j++) {
      const i = p[j] - 1, c = j - 1;
      if (i < n && c < m) pairs.push([i, c]);
    }
    pairs.sort((a, b) => a[0] - b[0]);
    return pairs;
  }

  // Like geometry.match_matrix: entries below thr are unmatchable; returns the assigned
  // [row, col] pairs with similarity > 0 and >= thr, sorted by row (no objects: the helpers
  // below build only what they return).
  function matchMatrix(sim, thr) {
    // similarities are >= 0, so with thr <= 0 the thresholded copy is the matrix itself
    const work = thr > 0 ? sim.map((row) => row.map((s) => (s >= thr ? s : 0))) : sim;
    const pairs = hungarian(work);
    let n = 0;
    for (let k = 0; k < pairs.length; k++) if (work[pairs[k][0]][pairs[k][1]] > 0) pairs[n++] = pairs[k];
    pairs.length = n;
    return pairs;
  }

  function iouMatrix(pred, gt) {
    const rows = new Array(pred.length);
    for (let i = 0; i < pred.length; i++) {
      const row = new Array(gt.length);
      for (let j = 0; j < gt.length; j++) row[j] = iou(pred[i], gt[j]);
      rows[i] = row;
    }
    return rows;
  }

  function restrict(sim, out, gt, classAware) {
    if (!classAware) return sim;
    const lp = out.labels || [], lg = gt.labels || [];
    return sim.map((row, i) => row.map((s, j) => ((lp[i] ?? "") === (lg[j] ?? "") ? s : 0)));
  }

  /**
   * One-to-one box matching maximising total IoU: [{pred, gt, iou}, ...] for pairs with
   * IoU > 0 and IoU >= thr (default 0). Mirrors geometry.hungarian_match.
   */
  function matchBoxes(pred, gt, thr) {
    const sim = iouMatrix(pred || [], gt || []);
    return matchMatrix(sim, thr || 0).map(([i, j]) => ({ pred: i, gt: j, iou: sim[i][j] }));
  }

  /** Hungarian-matched IoU summed over max(#pred, #gt); 1 when both are empty (built-in `iou`). */
  function softIoU(out, gt, classAware) {
    const p = out.boxes || [], q = gt.boxes || [];
    if (p.length === 0 && q.length === 0) return 1;
    const sim = restrict(iouMatrix(p, q), out, gt, !!classAware);
    let total = 0;
    for (const [i, j] of matchMatrix(sim, 0)) total += sim[i][j];
    return total / mathMax(p.length, q.length);
  }

  /**
   * F1 of one image at an IoU threshold (default 0.5): a prediction is a true positive when
   * matched one-to-one to a ground truth of the same label (unless classAware === false).
   * Takes canonical structures {boxes, labels}; 1 when both are empty (built-in `f1`).
   */
  function f1(out, gt, thr, classAware) {
    const p = out.boxes || [], q = gt.boxes || [];
    if (p.length + q.length === 0) return 1;
    const sim = restrict(iouMatrix(p, q), out, gt, classAware !== false);
    const tp = matchMatrix(sim, thr === undefined ? 0.5 : thr).length;
    return (2 * tp) / (p.length + q.length);
  }

  // Polygon rasterisation with pycocotools' algorithm (maskApi.c rleFrPoly: upsample by 5,
  // walk the edges, keep the points on the y-boundary), so JS and Python masks agree pixel
  // for pixel. Returns a column-major Uint8Array of h*w.
  function rasterise(poly, w, h) {
    const mask = new Uint8Array(w * h);
    let k = mathFloor(poly.length / 2);
    if (k < 3 || w <= 0 || h <= 0) return mask;
    const scale = 5;
    const x = new Array(k + 1), y = new Array(k + 1);
    for (let j = 0; j < k; j++) { x[j] = mathTrunc(scale * poly[2 * j] + 0.5); y[j] = mathTrunc(scale * poly[2 * j + 1] + 0.5); }
    x[k] = x[0]; y[k] = y[0];
    const u = [], v = [];
    for (let j = 0; j < k; j++) {
      let xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
      const dx = mathAbs(xe - xs), dy = mathAbs(ys - ye);
      const flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
      if (flip) { let t = xs; xs = xe; xe = t; t = ys; ys = ye; ye = t; }
      const s = dx >= dy ? (ye - ys) / dx : (xe - xs) / dy;
      if (dx >= dy) {
        for (let d = 0; d <= dx; d++) { const t = flip ? dx - d : d; u.push(t + xs); v.push(mathTrunc(ys + s * t + 0.5)); }
      } else {
        for (let d = 0; d <= dy; d++) { const t = flip ? dy - d : d; v.push(t + ys); u.push(mathTrunc(xs + s * t + 0.5)); }
      }
    }
    const a = [];
    for (let j = 1; j < u.length; j++) {
      if (u[j] === u[j - 1]) continue;
      let xd = u[j] < u[j - 1] ? u[j] : u[j] - 1;
      xd = (xd + 0.5) / scale - 0.5;
      if (mathFloor(xd) !== xd || xd < 0 || xd > w - 1) continue;
      let yd = v[j] < v[j - 1] ? v[j] : v[j - 1];
      yd = (yd + 0.5) / scale - 0.5;
      if (yd < 0) yd = 0; else if (yd > h) yd = h;
      yd = mathCeil(yd);
      a.push(xd * h + yd);
    }
    a.push(h * w);
    a.sort((p, q) => p - q);
    // Boundary points toggle the mask along each column (column-major, like COCO's RLE).
    let prev = 0, on = 0;
    for (const t of a) {
      if (on) mask.fill(1, prev, t);
      on ^= 1;
      prev = t;
    }
    return mask;
  }

  /** Mask IoU of two flat polygons [x1, y1, x2, y2, ...] rasterised on a w x h grid. */
  function maskIoU(polyA, polyB, w, h) {
    const ma = rasterise(polyA || [], w, h), mb = rasterise(polyB || [], w, h);
    let inter = 0, ua = 0, ub = 0;
    for (let i = 0; i < ma.length; i++) { ua += ma[i]; ub += mb[i]; inter += ma[i] & mb[i]; }
    if (ua === 0 || ub === 0) return 0;
    return inter / (ua + ub - inter);
  }

  /**
   * COCO object keypoint similarity of one instance; points are [[x, y, v], ...], area is
   * the object scale s^2, sigmas default to 0.05 each (geometry.oks).
   */
  function oks(predPts, gtPts, area, sigmas) {
    predPts = predPts || []; gtPts = gtPts || [];
    const scale = mathMax(+area, Number.EPSILON);
    let total = 0, nVis = 0;
    for (let i = 0; i < gtPts.length; i++) {
      const q = gtPts[i];
      if (q.length < 3 || q[2] <= 0) continue;
      nVis++;
      const p = predPts[i];
      if (!p || p.length < 3 || p[2] <= 0) continue;
      const d2 = (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2;
      const sig = sigmas && sigmas[i] !== undefined ? sigmas[i] : 0.05;
      total += mathExp(-d2 / ((2 * sig) ** 2) / scale / 2);
    }
    if (nVis === 0) return predPts.some((p) => p.length >= 3 && p[2] > 0) ? 0 : 1;
    return total / nVis;
  }

  // Math.random seeded per job (mulberry32), so a reward that samples is reproducible.
  function seed(s) {
    let a = s >>> 0;
    Math.random = function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function describe(r) {
    if (r === undefined) return "undefined (did the function forget to `return`?)";
    if (r === null) return "null";
    if (typeof r === "number") return "" + r;
    if (typeof r === "string") return "a string";
    if (isArray(r)) return "an array";
    let thenable = false;
    try { thenable = !!r && typeof r.then === "function"; } catch (e) { /* a throwing getter: not a Promise */ }
    if (thenable) return "a Promise (rewards must be synchronous: drop async/await)";
    return "a value of type " + typeof r;
  }

  // A user string as it leaves the sandbox: a primitive, cut short. String() on an object
  // runs user code (toString), which may throw: that is described rather than propagated.
  function text(v, limit) {
    let t;
    try { t = typeof v === "string" ? v : toStr(v); } catch (e) { t = "(a value that cannot be shown)"; }
    if (typeof t !== "string") t = "(a value that cannot be shown)";
    return t.length > limit ? sliceOf(t, 0, limit) + "…" : t;
  }

  function errorOf(e) {
    if (e !== null && (typeof e === "object" || typeof e === "function")) {
      let name = "", message = "", stack = "";
      try { name = e.name ? text(e.name, 100) + ": " : ""; } catch (x) { /* a throwing getter */ }
      try { message = text(e.message, MESSAGE_CHARS); } catch (x) { message = "(a message that cannot be read)"; }
      try { stack = text(e.stack || "", STACK_CHARS); } catch (x) { /* no stack */ }
      return { message: name + message, stack: stack };
    }
    return { message: "threw " + text(e, MESSAGE_CHARS), stack: "" };
  }

  // The harness: one call scores a whole batch. pairs = [[out, gt], ...]. Returns a JSON
  // string {scores: [number | null], errors: [{index, message, stack}]}; a failing sample
  // gets null and an error, the others are still scored.
  // User code may have replaced any prototype method by now (Object.prototype.toJSON, an
  // Array.prototype index setter, a Proxy for rewardBatch's array), so the answer is built
  // from primitives only: each score is read once, checked, and kept in a typed array (no
  // prototype hooks), then written out by string concatenation, which calls no user code.
  // JSON.stringify sees only primitive strings, for which it consults no toJSON.
  function newAnswer(n) {
    return { n: n, vals: new F64(n), ok: new U8(n), errors: "" }; // own data properties: no setters run
  }
  function put(a, i, v) {
    if (typeof v === "number" && isFinite_(v)) { a.vals[i] = v; a.ok[i] = 1; return true; }
    return false;
  }
  function fail(a, index, message, stack) {
    a.errors += (a.errors ? "," : "") + '{"index":' + (index === null ? "null" : "" + index) +
      ',"message":' + stringify(text(message, MESSAGE_CHARS + 200)) + ',"stack":' + stringify(text(stack || "", STACK_CHARS)) + "}";
  }
  function answer(a) {
    let out = '{"scores":[';
    for (let i = 0; i < a.n; i++) out += (i ? "," : "") + (a.ok[i] ? "" + a.vals[i] : "null");
    return out + '],"errors":[' + a.errors + "]}";
  }

  // A target from Python may lack fields (only what it has is sent); users see all of them.
  function full(t) {
    if (t === null || typeof t !== "object") return t;
    if (t.boxes === undefined) t.boxes = [];
    if (t.labels === undefined) t.labels = [];
    if (t.points === undefined) t.points = [];
    if (t.keypoints === undefined) t.keypoints = [];
    if (t.masks === undefined) t.masks = [];
    if (t.text === undefined) t.text = "";
    if (t.image === undefined) t.image = { width: 0, height: 0 };
    return t;
  }

  function run(pairs, n, sampleMs, callId) {
    g.__df_call = callId;
    g.__df_i = -1;
    const a = newAnswer(n);
    const batchFn = g.rewardBatch, fn = g.reward;
    if (typeof batchFn === "function") {
      let rs;
      try { rs = batchFn(pairs); } catch (e) { const err = errorOf(e); fail(a, null, err.message, err.stack); return answer(a); }
      let len = isArray(rs) ? rs.length : -1; // read once, like each score below
      if (typeof len !== "number") len = -1;
      if (len !== n) {
        fail(a, null, "rewardBatch returned " + (len >= 0 ? len + " scores for " + n + " pairs" : describe(rs)) + "; return one number per pair");
        return answer(a);
      }
      for (let i = 0; i < n; i++) {
        const v = rs[i]; // read once: a Proxy could answer differently the second time
        if (!put(a, i, v)) fail(a, i, "rewardBatch returned " + describe(v) + " for this pair, not a finite number");
      }
      return answer(a);
    }
    for (let i = 0; i < n; i++) {
      g.__df_i = i;
      const t0 = now();
      let r;
      try { r = fn(pairs[i][0], pairs[i][1]); } catch (e) { const err = errorOf(e); fail(a, i, err.message, err.stack); continue; }
      const took = now() - t0;
      if (took > sampleMs) { fail(a, i, "took " + took + " ms, over the " + sampleMs + " ms per-sample limit"); continue; }
      if (!put(a, i, r)) fail(a, i, "returned " + describe(r) + ", not a finite number");
    }
    return answer(a);
  }

  function check() {
    if (typeof g.rewardBatch === "function" || typeof g.reward === "function") return "ok";
    return "missing";
  }

  // A deep copy of a JSON value: a gt shared by a GRPO group arrives once, and each further
  // pair gets its own copy, so a reward that sorts gt.boxes in place cannot change the next
  // pair's gt.
  function clone(v) {
    if (v === null || typeof v !== "object") return v;
    if (isArray(v)) {
      const n = v.length, a = new ArrayOf(n);
      for (let i = 0; i < n; i++) a[i] = clone(v[i]);
      return a;
    }
    const o = {};
    for (const key in v) o[key] = clone(v[key]);
    return o;
  }

  // The batch arrives as one JSON string {o: [out...], g: [distinct gt...], gi: [gt index per
  // pair]}: V8's JSON.parse reads it about three times faster than compiling the same data as a
  // script literal (measured: 8.7 vs 24.5 ms for 512 pairs).
  function runJson(json, sampleMs, callId) {
    const d = parse(json), outs = d.o, gts = d.g, gi = d.gi, used = new U8(gts.length), n = outs.length;
    const pairs = new ArrayOf(n);
    for (let i = 0; i < n; i++) {
      const j = gi[i];
      pairs[i] = [full(outs[i]), full(used[j] ? clone(gts[j]) : gts[j])];
      used[j] = 1;
    }
    return run(pairs, n, sampleMs, callId);
  }

  const lib = { iou, centerDistance, hungarian, matchBoxes, softIoU, f1, maskIoU, oks };
  for (const name of Object.keys(lib)) g[name] = lib[name];
  // The harness cannot be replaced by user code (it is how scores leave the sandbox).
  for (const [name, value] of [["__df_run", runJson], ["__df_check", check], ["__df_seed", seed]]) {
    Object.defineProperty(g, name, { value, writable: false, configurable: false, enumerable: false });
  }
  // No timers, no WebAssembly, no shared memory: nothing that outlives a call or escapes the
  // heap limit. (V8 here has no require, process, fetch or file access to begin with.)
  for (const name of ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "__timer_manager",
                      "WebAssembly", "SharedArrayBuffer", "Atomics"]) {
    try { delete g[name]; } catch (e) { g[name] = undefined; }
  }
})(globalThis);
