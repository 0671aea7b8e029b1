"""Sine position encoding of DETR, with Deformable DETR's half-pixel offset."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "sine_position_embedding"]


def sine_position_embedding(
    padding_mask: torch.Tensor,
    num_pos_feats: int = 128,
    temperature: float = 10000.0,
    normalize: bool = True,
    scale: float = 2 * math.pi,
) -> torch.Tensor:
    """2-D sine/cosine encoding of the valid (unpadded) pixels of a feature map.

    Coordinates count only unpadded pixels, so an image keeps the same encoding whatever
    padding the batch adds to it.

    Args:
        padding_mask: True where the feature map is padding.
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
        temperature: base of the frequency ladder.
        normalize: divide coordinates by the valid extent and multiply by ``scale``.
        scale: range of the normalised coordinates.

    Shape:
        - padding_mask: :math:`(B, H, W)` bool.
        - Output: :math:`(B, 2 \\cdot num\\_pos\\_feats, H, W)` float32 (y channels, then x).
    """
    not_mask = ~padding_mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)  # (B, H, W)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)  # (B, H, W)
    if normalize:
        eps = 1e-6
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=padding_mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t  # (B, H, W, F)
    pos_y = y_embed[:, :, :, None] / dim_t  # (B, H, W, F)
    # interleave sin/cos: (B, H, W, F/2, 2) -> (B, H, W, F)
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (B, 2F, H, W)


class PositionEmbeddingSine(nn.Module):
    """Module form of :func:`sine_position_embedding` (no parameters).

    Args:
        num_pos_feats: channels per axis (``d_model // 2``).
        temperature: base of the frequency ladder.
        normalize: normalise coordinates to ``[0, scale]``.
        scale: range of the normalised coordinates.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """See :func:`sine_position_embedding`."""
        return sine_position_embedding(
            padding_mask, self.num_pos_feats, self.temperature, self.normalize, self.scale
        )
