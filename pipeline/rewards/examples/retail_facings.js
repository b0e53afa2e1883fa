// Retail "facings count": what a merchandiser audits is how many facings of each product are
// on the shelf. Score = 1 - (sum over products of |predicted count - true count|) / (total
// true facings), floored at 0, blended with localisation so boxes still have to be on the
// products (70 % counts, 30 % Hungarian-matched IoU).
function counts(labels) {
  const c = {};
  for (const l of labels) c[l] = (c[l] || 0) + 1;
  return c;
}

function reward(out, gt) {
  const p = counts(out.labels), t = counts(gt.labels);
  let err = 0;
  for (const k of new Set([...Object.keys(p), ...Object.keys(t)])) err += Math.abs((p[k] || 0) - (t[k] || 0));
  const countScore = Math.max(0, 1 - err / Math.max(1, gt.labels.length));
  return 0.7 * countScore + 0.3 * softIoU(out, gt, true);
}
