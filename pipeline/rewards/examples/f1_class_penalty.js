// F1 at IoU 0.5 with a class penalty: a box in the right place with the wrong label is not a
// true positive, and it costs an extra 0.25 per mislabelled box (a wrong SKU on a shelf is
// worse than a missed one), floored at 0.
function reward(out, gt) {
  const base = f1(out, gt, 0.5);            // class-aware F1@0.5
  let mislabelled = 0;
  for (const m of matchBoxes(out.boxes, gt.boxes, 0.5)) {
    if (out.labels[m.pred] !== gt.labels[m.gt]) mislabelled += 1;
  }
  return Math.max(0, base - 0.25 * mislabelled);
}
