// IoU reward: predictions and ground truth matched one-to-one (Hungarian, maximising total
// IoU); the matched IoUs are summed and divided by max(#predicted, #true), so a missed box
// and an extra box cost the same. Equal to the built-in `iou` reward.
function reward(out, gt) {
  const pred = out.boxes, truth = gt.boxes;
  if (pred.length === 0 && truth.length === 0) return 1;
  let total = 0;
  for (const m of matchBoxes(pred, truth)) total += m.iou;
  return total / Math.max(pred.length, truth.length);
}
