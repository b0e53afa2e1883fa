"""Ordinal-aware loss for location tokens.

Plain cross-entropy treats ``<loc_12>`` as exactly as wrong as ``<loc_31>`` when the answer
is ``<loc_13>``; a small model then needs many more steps to learn geometry. Spreading each
location target over its neighbours with a Gaussian (as in Pix2Seq-style label smoothing /
distribution focal loss for box regression) gives a graded signal. Text tokens keep a one-hot
target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_location_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loc_ids: torch.Tensor,
    sigma: float = 1.0,
    num_items: int | None = None,
    shift: bool = True,
) -> torch.Tensor:
    """Causal LM loss where targets that are location tokens become Gaussians over the bins.
    ``shift=False``: an encoder-decoder's logits already line up with its labels."""
    if shift:
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    logits = logits.float()
    mask = labels != -100
    logits = logits[mask]
    target = labels[mask]
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    n_bins = loc_ids.numel()
    # Map token id -> bin index (or -1 for ordinary tokens).
    lut = torch.full((logits.shape[-1],), -1, dtype=torch.long, device=logits.device)
    lut[loc_ids] = torch.arange(n_bins, device=logits.device)
    bins = lut[target]
    is_loc = bins >= 0
    if is_loc.any() and sigma > 0:
        grid = torch.arange(n_bins, device=logits.device, dtype=torch.float32)
        w = torch.exp(-0.5 * ((grid[None, :] - bins[is_loc, None].float()) / sigma) ** 2)
        w = w / w.sum(dim=1, keepdim=True)
        soft = -(w * logp[is_loc][:, loc_ids]).sum(dim=1)
        nll = nll.clone()
        nll[is_loc] = soft
    denom = num_items if num_items else max(int(mask.sum()), 1)
    return nll.sum() / denom
