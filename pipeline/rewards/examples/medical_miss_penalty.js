// Medical screening: a missed lesion is worse than a false alarm (a radiologist dismisses a
// false alarm in seconds; a miss goes home untreated). Each true lesion found (IoU >= 0.3)
// earns its IoU, each miss costs 1, each false alarm costs 0.25; normalised by the number
// of true lesions (an empty scan: 1 if nothing was flagged, minus 0.25 per false alarm).
function reward(out, gt) {
  const matches = matchBoxes(out.boxes, gt.boxes, 0.3);
  const misses = gt.boxes.length - matches.length;
  const falseAlarms = out.boxes.length - matches.length;
  let found = 0;
  for (const m of matches) found += m.iou;
  if (gt.boxes.length === 0) return Math.max(0, 1 - 0.25 * falseAlarms);
  const score = (found - misses - 0.25 * falseAlarms) / gt.boxes.length;
  return Math.max(-1, Math.min(1, score));
}
