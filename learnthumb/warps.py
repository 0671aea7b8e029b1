"""Separable monotone warps: exact coordinate maps between an image and a warped thumbnail.

A content-adaptive downsampler (:class:`learnthumb.SaliencySampler`) gives some regions of the
image more thumbnail pixels than others. A model run on such a thumbnail answers in *thumbnail*
coordinates, and a plain rescale no longer brings its answers back. :class:`SeparableWarp`
holds, for every image of a batch, the map between the two coordinate systems and applies it
both ways to points, boxes and dense maps.

The map is separable (the per-axis variant of Thavamani et al., "Learning to Zoom and Unzoom",
CVPR 2023): the thumbnail's x depends only on the image's x, and y only on y. Each axis is a
strictly increasing piecewise-linear function of normalised coordinates, given by the knots
``0 = c_0 < c_1 < ... < c_n = 1`` of a cumulative density over ``n`` equal cells of the image:
image coordinate ``t`` in cell ``k`` goes to ``c_k + (n t - k) (c_{k+1} - c_k)``. Cells with a
large density get a large share of the thumbnail. Piecewise-linear and monotone, the map has an
exact inverse, and a box maps corner-wise. Outside ``[0, 1]`` both maps continue linearly with
the slope of their first / last cell, so round trips stay exact there too.

Coordinates follow :mod:`learnthumb.rescale`: an image of size ``(H, W)`` spans ``[0, W] x [0,
H]`` and pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``. With one cell per axis the
warp is the uniform map ``x * w / W`` of :func:`learnthumb.rescale_keypoints`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from learnthumb._checks import check_choice, check_floating, check_int, check_ndim, check_tensor

__all__ = ["SeparableWarp"]

_RESAMPLE_MODES = ("bilinear", "nearest")
#: Snap a preimage edge this close to an integer (in image pixels) onto it: float error must not
#: make a padding mask's cell one pixel wider.
_EDGE_TOLERANCE = 1e-3


def _image_to_thumbnail_1d(t: Tensor, knots: Tensor) -> Tensor:
    """The forward map of one axis: normalised image coordinates to normalised thumbnail ones.

    Args:
        t: ``(B, M)`` image coordinates divided by the image's side.
        knots: ``(B, n + 1)`` strictly increasing knots, ``0`` first and ``1`` last.

    Returns:
        ``(B, M)`` thumbnail coordinates divided by the thumbnail's side.
    """
    # Cells last: (B, M, n) keeps torch.export from guarding on n != 1 (its contiguity checks).
    cells = knots.shape[1] - 1
    widths = (knots[:, 1:] - knots[:, :-1]).unsqueeze(1)  # (B, 1, n)
    index = torch.arange(cells, device=t.device, dtype=t.dtype)  # (n,)
    position = t.unsqueeze(-1) * cells - index  # (B, M, n): where t lies within each cell
    inside = (widths * position.clamp(0, 1)).sum(-1)  # (B, M)
    # Linear continuation beyond the image with the first / last cell's slope.
    before = widths[..., 0] * position[..., 0].clamp(max=0)
    after = widths[..., -1] * (position[..., -1] - 1).clamp(min=0)
    return inside + before + after


def _thumbnail_to_image_1d(v: Tensor, knots: Tensor) -> Tensor:
    """The inverse of :func:`_image_to_thumbnail_1d` (same shapes), exact up to float error."""
    cells = knots.shape[1] - 1
    starts = knots[:, :-1].unsqueeze(1)  # (B, 1, n)
    widths = (knots[:, 1:] - knots[:, :-1]).unsqueeze(1)  # (B, 1, n)
    fraction = (v.unsqueeze(-1) - starts) / widths  # (B, M, n): how much of each cell v covers
    inside = fraction.clamp(0, 1).sum(-1)  # (B, M), in cells
    before = fraction[..., 0].clamp(max=0)
    after = (fraction[..., -1] - 1).clamp(min=0)
    return (inside + before + after) / cells


def _thumbnail_to_image_at_centres(count: int, knots: Tensor) -> Tensor:
    """:func:`_thumbnail_to_image_1d` at the ``count`` pixel centres ``(q + 0.5) / count``.

    The sampling grid of a thumbnail needs the inverse map at regular positions only, where each
    position's cell comes from counting the knots before it (a scatter and a cumulative sum)
    instead of a ``(B, M, n)`` comparison: fewer operations, and ``torch.export`` can keep the
    height and width dynamic (it cannot prove the guards that the broadcast adds).

    Returns:
        ``(B, count)`` normalised image coordinates.
    """
    batch, cells = knots.shape[0], knots.shape[1] - 1
    # The first centre at or after each knot: (q + 0.5) / count >= c_j. All knots, not only the
    # interior ones: a (B, n - 1) tensor would make torch.export guard on n - 1 != 1.
    first = torch.ceil(knots.detach() * count - 0.5).long().clamp(0, count)  # (B, n + 1)
    marks = torch.zeros(batch, count + 1, dtype=torch.long, device=knots.device)
    marks = marks.scatter_add(1, first, torch.ones_like(first))
    # c_0 = 0 marks every centre once: subtract it. (B, count): each centre's cell.
    cell = (marks[:, :count].cumsum(1) - 1).clamp(0, cells - 1)
    start = knots.gather(1, cell)
    width = knots.gather(1, cell + 1) - start
    centres = (torch.arange(count, device=knots.device, dtype=knots.dtype) + 0.5) / count
    return (cell.to(knots.dtype) + (centres - start) / width) / cells


def _pixel_centres(count: int, batch: int, like: Tensor) -> Tensor:
    """``(B, count)`` centres ``(q + 0.5) / count`` of ``count`` pixels over ``[0, 1]``."""
    centres = (torch.arange(count, device=like.device, dtype=like.dtype) + 0.5) / count
    return centres.unsqueeze(0).expand(batch, count)


def _separable_grid(grid_x: Tensor, grid_y: Tensor) -> Tensor:
    """The ``(B, H', W', 2)`` grid of per-column x ``(B, W')`` and per-row y ``(B, H')``."""
    batch, width = grid_x.shape
    height = grid_y.shape[1]
    return torch.stack(
        [
            grid_x.unsqueeze(1).expand(batch, height, width),
            grid_y.unsqueeze(2).expand(batch, height, width),
        ],
        dim=-1,
    )


def _check_knots(knots: object, name: str) -> Tensor:
    check_ndim(knots, 2, name, "(B, n + 1)")
    check_floating(knots, name)
    if knots.shape[1] < 2:
        raise ValueError(f"{name} must hold at least 2 knots per image, got {tuple(knots.shape)}")
    return knots


def _check_density(density: Tensor, name: str, positive: bool) -> None:
    """Raise unless ``density`` is finite, >= 0 (> 0 if ``positive``) and no row sums to 0."""
    bad = ~torch.isfinite(density) | (density <= 0 if positive else density < 0)
    if bool(bad.any()):
        rule = "> 0 (uniform_weight=0)" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {rule}, got {density[bad][0].item()}")
    if bool((density.sum(1) <= 0).any()):
        raise ValueError(f"{name} must have a positive sum in every row, got a row of zeros")


def _check_size(size: object, name: str) -> tuple[int, int]:
    if isinstance(size, Tensor) or not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{name} must be a (H, W) pair of positive ints, got {size!r}")
    # torch.SymInt: sizes read from tensor shapes under torch.export / torch.compile.
    for value in size:
        if isinstance(value, torch.SymInt):
            continue
        check_int(value, name, minimum=1)
    return size[0], size[1]


class SeparableWarp:
    """Exact, batched coordinate maps between images and their warped thumbnails.

    Build one with :meth:`from_densities` (what :class:`learnthumb.SaliencySampler` does) or
    :meth:`uniform` (the plain resize, the warp of every non-warping downsampler). The knots
    keep their autograd graph: losses computed in image coordinates train the warp.

    Args:
        knots_x: ``(B, n_x + 1)`` strictly increasing knots of the x map, ``0`` first and ``1``
            last (not checked: a check would synchronise with the device).
        knots_y: ``(B, n_y + 1)`` knots of the y map.
        image_size: ``(H, W)`` of the images.
        thumbnail_size: ``(h, w)`` of the thumbnails.

    Shape:
        - points: :math:`(B, *, 2)` or :math:`(B, *, 3)` ``(x, y[, visibility])`` in pixels.
        - boxes: :math:`(B, *, 4)`, ``xyxy`` in pixels.
        - maps: :math:`(B, C, h', w')` covering the thumbnail (or image) at any resolution.

    Example:
        >>> warp = SeparableWarp.from_densities(
        ...     torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0]]), (40, 40), (10, 10)
        ... )
        >>> warp.points_to_thumbnail(torch.tensor([[[20.0, 20.0]]]))  # the left half is zoomed
        tensor([[[7.5000, 5.0000]]])
        >>> warp.points_to_image(torch.tensor([[[7.5, 5.0]]]))
        tensor([[[20., 20.]]])
    """

    def __init__(
        self,
        knots_x: Tensor,
        knots_y: Tensor,
        image_size: Sequence[int],
        thumbnail_size: Sequence[int],
    ) -> None:
        _check_knots(knots_x, "knots_x")
        _check_knots(knots_y, "knots_y")
        if knots_x.shape[0] != knots_y.shape[0]:
            raise ValueError(
                f"knots_x and knots_y must describe the same batch, got {tuple(knots_x.shape)} "
                f"and {tuple(knots_y.shape)}"
            )
        self.knots_x = knots_x
        self.knots_y = knots_y
        self.image_size = _check_size(image_size, "image_size")
        self.thumbnail_size = _check_size(thumbnail_size, "thumbnail_size")

    # ------------------------------------------------------------------------- constructors
    @classmethod
    def from_densities(
        cls,
        density_x: Tensor,
        density_y: Tensor,
        image_size: Sequence[int],
        thumbnail_size: Sequence[int],
        uniform_weight: float = 0.0,
    ) -> SeparableWarp:
        """The warp whose thumbnail share of each image cell follows a density per axis.

        Each density is normalised to sum 1, mixed with the uniform density
        (``(1 - uniform_weight) * density + uniform_weight / n``) and accumulated into knots.
        A ``uniform_weight`` above 0 bounds the warp: no image cell gets less than
        ``uniform_weight`` times its uniform share, so one thumbnail pixel never spans more than
        ``(W / w) / uniform_weight`` image pixels.

        Args:
            density_x: ``(B, n_x)`` finite, non-negative weights of ``n_x`` equal image columns'
                cells, not all zero in any row.
            density_y: ``(B, n_y)`` weights of the rows' cells, likewise.
            image_size: ``(H, W)``.
            thumbnail_size: ``(h, w)``.
            uniform_weight: share of the uniform density, in ``[0, 1]``; with 0 every density
                entry must be positive (a zero would give a cell no share of the thumbnail).

        Raises:
            ValueError: a density breaks the rules above (checked on the values, which
                synchronises with the device; :class:`learnthumb.SaliencySampler`'s softmax
                marginals need no check and skip it).

        Returns:
            The warp.

        Example:
            >>> warp = SeparableWarp.from_densities(
            ...     torch.ones(1, 4), torch.ones(1, 3), (30, 40), (8, 10)
            ... )
            >>> warp.knots_x
            tensor([[0.0000, 0.2500, 0.5000, 0.7500, 1.0000]])
        """
        for density, name in ((density_x, "density_x"), (density_y, "density_y")):
            check_ndim(density, 2, name, "(B, n)")
            check_floating(density, name)
        if isinstance(uniform_weight, bool) or not isinstance(uniform_weight, (int, float)):
            raise TypeError(f"uniform_weight must be a number, got {uniform_weight!r}")
        if not 0 <= uniform_weight <= 1:
            raise ValueError(f"uniform_weight must lie in [0, 1], got {uniform_weight}")
        for density, name in ((density_x, "density_x"), (density_y, "density_y")):
            _check_density(density, name, positive=uniform_weight == 0)
        return cls._from_valid_densities(
            density_x, density_y, image_size, thumbnail_size, uniform_weight
        )

    @classmethod
    def _from_valid_densities(
        cls,
        density_x: Tensor,
        density_y: Tensor,
        image_size: Sequence[int],
        thumbnail_size: Sequence[int],
        uniform_weight: float,
    ) -> SeparableWarp:
        """:meth:`from_densities` without the checks of the densities' values (no sync)."""

        def knots(density: Tensor) -> Tensor:
            share = density / density.sum(1, keepdim=True)  # (B, n)
            share = (1 - uniform_weight) * share + uniform_weight / density.shape[1]
            cumulative = torch.cumsum(share, dim=1)  # (B, n)
            # Dividing by the last entry makes it exactly 1, as the maps assume.
            cumulative = cumulative / cumulative[:, -1:]
            return torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative], dim=1)

        return cls(knots(density_x), knots(density_y), image_size, thumbnail_size)

    @classmethod
    def uniform(
        cls,
        image_size: Sequence[int],
        thumbnail_size: Sequence[int],
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> SeparableWarp:
        """The plain resize: x scales by ``w / W`` and y by ``h / H`` (one cell per axis).

        Example:
            >>> warp = SeparableWarp.uniform((40, 60), (10, 15))
            >>> warp.points_to_thumbnail(torch.tensor([[[12.0, 8.0]]]))
            tensor([[[3., 2.]]])
        """
        check_int(batch_size, "batch_size", minimum=1)
        knots = torch.tensor([[0.0, 1.0]], device=device, dtype=dtype).expand(batch_size, 2)
        return cls(knots, knots, image_size, thumbnail_size)

    # ------------------------------------------------------------------------------ basics
    @property
    def batch_size(self) -> int:
        """The number of images the warp describes."""
        return self.knots_x.shape[0]

    def __repr__(self) -> str:
        return (
            f"SeparableWarp(batch_size={self.batch_size}, image_size={tuple(self.image_size)}, "
            f"thumbnail_size={tuple(self.thumbnail_size)}, cells=({self.knots_y.shape[1] - 1}, "
            f"{self.knots_x.shape[1] - 1}))"
        )

    def _check_batched(self, tensor: object, name: str, last: tuple[int, ...], layout: str) -> None:
        check_tensor(tensor, name)
        check_floating(tensor, name)
        if tensor.dim() < 2 or tensor.shape[0] != self.batch_size or tensor.shape[-1] not in last:
            raise ValueError(
                f"{name} must have shape {layout} with B = {self.batch_size}, "
                f"got {tuple(tensor.shape)}"
            )

    def _map_points(self, points: Tensor, to_thumbnail: bool) -> Tensor:
        # flatten, not reshape(B, -1, k): that is ambiguous for an empty batch.
        flat = points.unsqueeze(1).flatten(1, -2)  # (B, M, k)
        image_h, image_w = self.image_size
        thumb_h, thumb_w = self.thumbnail_size
        knots_x = self.knots_x.to(points.dtype)
        knots_y = self.knots_y.to(points.dtype)
        if to_thumbnail:
            x = _image_to_thumbnail_1d(flat[..., 0] / image_w, knots_x) * thumb_w
            y = _image_to_thumbnail_1d(flat[..., 1] / image_h, knots_y) * thumb_h
        else:
            x = _thumbnail_to_image_1d(flat[..., 0] / thumb_w, knots_x) * image_w
            y = _thumbnail_to_image_1d(flat[..., 1] / thumb_h, knots_y) * image_h
        mapped = torch.cat([torch.stack([x, y], dim=-1), flat[..., 2:]], dim=-1)  # (B, M, k)
        return mapped.reshape(points.shape)

    # -------------------------------------------------------------------- points and boxes
    def points_to_thumbnail(self, points: Tensor) -> Tensor:
        """Map image pixel coordinates ``(x, y[, visibility])`` to thumbnail ones.

        Shape:
            - points: :math:`(B, *, 2)` or :math:`(B, *, 3)`; a third entry is carried over.
            - output: same as ``points``.
        """
        self._check_batched(points, "points", (2, 3), "(B, *, 2) or (B, *, 3)")
        return self._map_points(points, to_thumbnail=True)

    def points_to_image(self, points: Tensor) -> Tensor:
        """Map thumbnail pixel coordinates back to the image's: the inverse of
        :meth:`points_to_thumbnail`, with the same shapes."""
        self._check_batched(points, "points", (2, 3), "(B, *, 2) or (B, *, 3)")
        return self._map_points(points, to_thumbnail=False)

    def _map_boxes(self, boxes: Tensor, to_thumbnail: bool) -> Tensor:
        self._check_batched(boxes, "boxes", (4,), "(B, *, 4) in xyxy")
        corners = boxes.reshape(*boxes.shape[:-1], 2, 2)  # (B, *, 2 corners, (x, y))
        # Each axis map is increasing, so the corners' images are the new box's corners.
        return self._map_points(corners, to_thumbnail).reshape(boxes.shape)

    def boxes_to_thumbnail(self, boxes: Tensor) -> Tensor:
        """Map ``xyxy`` image boxes (e.g. ground truth) onto the thumbnail, corner-wise.

        Shape:
            - boxes: :math:`(B, *, 4)`.
            - output: same as ``boxes``.
        """
        return self._map_boxes(boxes, to_thumbnail=True)

    def boxes_to_image(self, boxes: Tensor) -> Tensor:
        """Map ``xyxy`` boxes predicted on the thumbnail back to image pixels: the inverse of
        :meth:`boxes_to_thumbnail`, with the same shapes."""
        return self._map_boxes(boxes, to_thumbnail=False)

    # ---------------------------------------------------------------------------- dense maps
    def _check_maps(self, maps: object, mode: str) -> None:
        check_ndim(maps, 4, "maps", "(B, C, h, w)")
        check_floating(maps, "maps")
        if maps.shape[0] != self.batch_size:
            raise ValueError(
                f"maps must have shape (B, C, h, w) with B = {self.batch_size}, "
                f"got {tuple(maps.shape)}"
            )
        check_choice(mode, "mode", _RESAMPLE_MODES)

    def masks_to_image(
        self, maps: Tensor, size: Sequence[int] | None = None, mode: str = "bilinear"
    ) -> Tensor:
        """Resample thumbnail-level logits, heatmaps or masks onto the image's pixel grid.

        Each output pixel centre is mapped onto the thumbnail and ``maps`` is read there with
        ``grid_sample`` (``align_corners=False``, border padding). ``maps`` may have any
        resolution that covers the whole thumbnail (e.g. stride-8 logits). Resample logits, not
        labels, as with :func:`learnthumb.upsample_to`.

        Args:
            maps: dense predictions on the thumbnail.
            size: ``(H', W')`` of the output, covering the image; the image size by default.
            mode: ``"bilinear"`` or ``"nearest"``.

        Shape:
            - maps: :math:`(B, C, h', w')`.
            - output: :math:`(B, C, H, W)` (or ``size``).
        """
        self._check_maps(maps, mode)
        height, width = self.image_size if size is None else _check_size(size, "size")
        knots_x = self.knots_x.to(maps.dtype)
        knots_y = self.knots_y.to(maps.dtype)
        batch = self.batch_size
        grid_x = _image_to_thumbnail_1d(_pixel_centres(width, batch, knots_x), knots_x)
        grid_y = _image_to_thumbnail_1d(_pixel_centres(height, batch, knots_y), knots_y)
        grid = _separable_grid(2 * grid_x - 1, 2 * grid_y - 1)  # (B, H', W', 2)
        return F.grid_sample(maps, grid, mode=mode, padding_mode="border", align_corners=False)

    def masks_to_thumbnail(
        self,
        maps: Tensor,
        size: Sequence[int] | None = None,
        mode: str = "bilinear",
        supersample: int = 1,
    ) -> Tensor:
        """Warp image-level maps (images, masks, heatmaps) onto the thumbnail's pixel grid.

        Every output pixel averages ``supersample x supersample`` samples of ``maps`` taken at
        the image positions of evenly spaced points inside it: a box filter over the pixel's
        preimage, which follows the warp (more smoothing where the thumbnail shrinks).

        Args:
            maps: maps over the whole image, at any resolution.
            size: ``(h', w')`` of the output; the thumbnail size by default.
            mode: ``"bilinear"`` or ``"nearest"`` sampling.
            supersample: samples per output pixel along each axis.

        Shape:
            - maps: :math:`(B, C, H', W')`.
            - output: :math:`(B, C, h, w)` (or ``size``).
        """
        self._check_maps(maps, mode)
        check_int(supersample, "supersample", minimum=1)
        height, width = self.thumbnail_size if size is None else _check_size(size, "size")
        return self._resample_to_thumbnail(maps, height, width, mode, supersample)

    def _resample_to_thumbnail(
        self, maps: Tensor, height: int, width: int, mode: str, supersample: int
    ) -> Tensor:
        knots_x = self.knots_x.to(maps.dtype)
        knots_y = self.knots_y.to(maps.dtype)
        grid_x = _thumbnail_to_image_at_centres(width * supersample, knots_x)  # (B, w k)
        grid_y = _thumbnail_to_image_at_centres(height * supersample, knots_y)  # (B, h k)
        grid = _separable_grid(2 * grid_x - 1, 2 * grid_y - 1)  # (B, h k, w k, 2)
        samples = F.grid_sample(maps, grid, mode=mode, padding_mode="border", align_corners=False)
        if supersample == 1:
            return samples
        return F.avg_pool2d(samples, supersample)  # (B, C, h, w)

    def padding_mask_to_thumbnail(self, mask: Tensor) -> Tensor:
        """The warped counterpart of :func:`learnthumb.downsample_padding_mask`.

        A thumbnail pixel is padding only when every image pixel its preimage touches is
        padding; one valid pixel makes it valid. For the uniform warp and sizes that are
        multiples of the scale this is exactly ``downsample_padding_mask(mask, scale)``.

        Args:
            mask: bool padding mask of the images, True = padded pixel.

        Shape:
            - mask: :math:`(B, H, W)`.
            - output: :math:`(B, h, w)`, bool.
        """
        check_ndim(mask, 3, "mask", "(B, H, W)")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = padded), got {mask.dtype}")
        if tuple(mask.shape) != (self.batch_size, *self.image_size):
            raise ValueError(
                f"mask must have shape {(self.batch_size, *self.image_size)}, "
                f"got {tuple(mask.shape)}"
            )
        batch, height, width = mask.shape
        thumb_h, thumb_w = self.thumbnail_size
        # Summed-area table of valid pixels, with a zero first row and column.
        valid = (~mask).long().cumsum(1).cumsum(2)  # (B, H, W)
        table = F.pad(valid, (1, 0, 1, 0))  # (B, H + 1, W + 1)

        def pixel_ranges(knots: Tensor, cells: int, side: int) -> tuple[Tensor, Tensor]:
            edges = torch.arange(cells + 1, device=knots.device, dtype=knots.dtype) / cells
            edges = _thumbnail_to_image_1d(edges.expand(batch, cells + 1), knots) * side
            first = torch.floor(edges[:, :-1] + _EDGE_TOLERANCE).long().clamp(0, side - 1)
            end = torch.ceil(edges[:, 1:] - _EDGE_TOLERANCE).long()
            return first, torch.maximum(end, first + 1).clamp(max=side)  # (B, cells) each

        knots_x = self.knots_x.detach().double()
        knots_y = self.knots_y.detach().double()
        first_x, end_x = pixel_ranges(knots_x, thumb_w, width)
        first_y, end_y = pixel_ranges(knots_y, thumb_h, height)

        def corner(rows: Tensor, columns: Tensor) -> Tensor:
            picked = table.gather(1, rows.unsqueeze(-1).expand(batch, thumb_h, width + 1))
            return picked.gather(2, columns.unsqueeze(1).expand(batch, thumb_h, thumb_w))

        count = (
            corner(end_y, end_x)
            - corner(first_y, end_x)
            - corner(end_y, first_x)
            + corner(first_y, first_x)
        )  # (B, h, w): valid pixels touched by each thumbnail pixel's preimage
        return count == 0
