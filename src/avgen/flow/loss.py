"""Flow-matching regression loss, optionally restricted to masked frames (FoleyGenEx Eq. 3-4)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["frame_losses", "flow_matching_loss"]


def frame_losses(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame MSE, (B, T, ...) -> (B, T): the mean over every feature of a frame (Eq. 3)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred.float() - target.float()).pow(2).flatten(2).mean(dim=-1)


def flow_matching_loss(pred: Tensor, target: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Masked MSE (FoleyGenEx Eq. 4): sum of frame losses over masked frames / number of them.

    frame_mask (B, T) bool selects the frames that count (the infilling span, or the valid
    frames of variable-length samples); None averages over all frames (MMAudio). With an empty
    mask the loss is 0 and still connected to the graph.
    """
    losses = frame_losses(pred, target)
    if frame_mask is None:
        return losses.mean()
    if frame_mask.shape != losses.shape:
        raise ValueError(f"frame_mask {tuple(frame_mask.shape)} must be (B, T) = {tuple(losses.shape)}")
    weights = frame_mask.to(losses.dtype)
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)
