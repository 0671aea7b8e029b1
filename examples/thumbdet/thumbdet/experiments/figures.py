"""The paper's Fig. 1 (mAP against speed), Fig. 5 (thumbnails) and Fig. 6 (detections).

Each function takes plain arrays and numbers, never a model, and writes one PNG with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

__all__ = [
    "enlarge_nearest",
    "plot_dataset_samples",
    "plot_detections",
    "plot_map_vs_speed",
    "plot_thumbnails",
]

# The paper's colours: green teacher, blue bicubic, red ThumbDet; triangles 4×, diamonds 2×.
_STYLE = {
    "teacher": ("Deformable-DETR (full size)", "tab:green", "o"),
    "bicubic_4x": ("Bicubic 4×", "tab:blue", "^"),
    "thumbdet_4x": ("ThumbDet 4×", "tab:red", "^"),
    "bicubic_2x": ("Bicubic 2×", "tab:blue", "D"),
    "thumbdet_2x": ("ThumbDet 2×", "tab:red", "D"),
}


def _as_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A (3, H, W) or (H, W, 3) image, float in [0, 1] or uint8, as float (H, W, 3)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise ValueError(f"image: expected shape (3, H, W) or (H, W, 3), got {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)  # (H, W, 3)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def enlarge_nearest(image: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Enlarge an image to ``size`` = (H, W) by repeating pixels, so each one stays visible.

    Args:
        image: ``(3, h, w)`` or ``(h, w, 3)``; ``H`` and ``W`` need not be multiples of h, w.

    Returns:
        A float ``(H, W, 3)`` array in [0, 1].
    """
    image = _as_hwc(image)
    rows = np.minimum((np.arange(size[0]) * image.shape[0]) // size[0], image.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) * image.shape[1]) // size[1], image.shape[1] - 1)
    return image[rows][:, cols]


def _save(figure: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_map_vs_speed(results: Mapping[str, Mapping], path: str | os.PathLike) -> Path:
    """Fig. 1: mAP against images/s, one marker per model.

    Args:
        results: model key (``teacher``, ``bicubic_4x``, ``thumbdet_4x``...) -> dict with
            ``mAP`` and ``images_per_s``; other keys are ignored.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    figure, axes = plt.subplots(figsize=(5.0, 3.6))
    for key, row in results.items():
        if not isinstance(row, Mapping) or "mAP" not in row:
            continue
        label, colour, marker = _STYLE.get(key, (key, "tab:gray", "s"))
        axes.scatter(
            row["images_per_s"], row["mAP"], color=colour, marker=marker, s=90, label=label
        )
        axes.annotate(
            f"{row['mAP']:.1f}",
            (row["images_per_s"], row["mAP"]),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )
    axes.set_xlabel("images/s (CPU)")
    axes.set_ylabel("mAP (%)")
    axes.set_title("Accuracy against speed")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _save(figure, path)


def plot_thumbnails(
    originals: Sequence[np.ndarray | torch.Tensor],
    columns: Mapping[str, Sequence[np.ndarray | torch.Tensor]],
    path: str | os.PathLike,
) -> Path:
    """Fig. 5: each original next to its thumbnails, enlarged to full size with nearest.

    Args:
        originals: N full-size images.
        columns: title -> N thumbnails (e.g. ``{"bicubic 4×": ..., "learned 4×": ...}``).
        path: the PNG to write.

    Returns:
        ``path``.
    """
    if not originals:
        raise ValueError("originals: expected at least one image, got none")
    for title, thumbs in columns.items():
        if len(thumbs) != len(originals):
            raise ValueError(
                f"columns[{title!r}]: expected {len(originals)} images, got {len(thumbs)}"
            )
    titles = ["original", *columns]
    figure, axes = plt.subplots(
        len(originals),
        len(titles),
        figsize=(2.6 * len(titles), 2.6 * len(originals)),
        squeeze=False,
    )
    for row, original in enumerate(originals):
        full = _as_hwc(original)
        panels = [full] + [
            enlarge_nearest(thumbs[row], full.shape[:2]) for thumbs in columns.values()
        ]
        for col, panel in enumerate(panels):
            axes[row, col].imshow(panel, interpolation="nearest")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(titles[col], fontsize=9)
    return _save(figure, path)


def plot_detections(
    images: Sequence[np.ndarray | torch.Tensor],
    detections: Mapping[str, Sequence[Mapping[str, np.ndarray | torch.Tensor]]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    score_threshold: float = 0.3,
) -> Path:
    """Fig. 6: the detections of several models on the same images.

    Args:
        images: N full-size images.
        detections: model title -> N dicts with ``boxes`` (K, 4) as x0, y0, x1, y1 in the
            image's pixels, ``scores`` (K,) and ``labels`` (K,) indexing ``class_names``.
        class_names: names of the classes.
        path: the PNG to write.
        score_threshold: boxes scoring below it are not drawn.

    Returns:
        ``path``.
    """
    if not images:
        raise ValueError("images: expected at least one image, got none")
    palette = plt.get_cmap("tab10")
    titles = list(detections)
    figure, axes = plt.subplots(
        len(images), len(titles), figsize=(2.8 * len(titles), 2.8 * len(images)), squeeze=False
    )
    for col, title in enumerate(titles):
        if len(detections[title]) != len(images):
            count = len(detections[title])
            raise ValueError(f"detections[{title!r}]: expected {len(images)} entries, got {count}")
        for row, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(_as_hwc(image), interpolation="nearest")
            found = detections[title][row]
            boxes = np.asarray(torch.as_tensor(found["boxes"]).detach().cpu()).reshape(-1, 4)
            scores = np.asarray(torch.as_tensor(found["scores"]).detach().cpu()).reshape(-1)
            labels = np.asarray(torch.as_tensor(found["labels"]).detach().cpu()).reshape(-1)
            for (x0, y0, x1, y1), score, label in zip(boxes, scores, labels, strict=True):
                if score < score_threshold:
                    continue
                colour = palette(int(label) % 10)
                ax.add_patch(
                    Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, linewidth=1.2)
                )
                name = (
                    class_names[int(label)]
                    if 0 <= int(label) < len(class_names)
                    else str(int(label))
                )
                ax.text(
                    x0,
                    y0,
                    f"{name} {score:.2f}",
                    color="white",
                    fontsize=6,
                    bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "linewidth": 0},
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    return _save(figure, path)


def plot_dataset_samples(
    images: Sequence[np.ndarray | torch.Tensor],
    boxes: Sequence[Sequence[Sequence[float]]],
    names: Sequence[Sequence[str]],
    thumbnails: Sequence[np.ndarray | torch.Tensor],
    path: str | os.PathLike,
    thumbnail_title: str = "4× bicubic thumbnail",
) -> Path:
    """Samples of a dataset with their labelled boxes (top) and a thumbnail of each (bottom).

    Args:
        images: N full-size images.
        boxes: for each image, its boxes as (x, y, w, h) in pixels (COCO ``bbox``).
        names: for each image, the class name of each box.
        thumbnails: N thumbnails, drawn enlarged with nearest so their pixels show.
        path: the PNG to write.
        thumbnail_title: the y-label of the second row.

    Returns:
        ``path``.
    """
    if not images or not len(images) == len(boxes) == len(names) == len(thumbnails):
        raise ValueError(
            "images, boxes, names, thumbnails: expected the same non-zero length, got "
            f"{len(images)}, {len(boxes)}, {len(names)}, {len(thumbnails)}"
        )
    figure, axes = plt.subplots(2, len(images), figsize=(2.4 * len(images), 5.0), squeeze=False)
    for col, image in enumerate(images):
        full = _as_hwc(image)
        axes[0, col].imshow(full, interpolation="nearest")
        for (x, y, w, h), name in zip(boxes[col], names[col], strict=True):
            axes[0, col].add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, color="white"))
            axes[0, col].text(
                x,
                y - 1,
                name,
                color="black",
                fontsize=6,
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 0.5, "linewidth": 0},
            )
        axes[1, col].imshow(
            enlarge_nearest(thumbnails[col], full.shape[:2]), interpolation="nearest"
        )
        for row in (0, 1):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].set_ylabel("full size", fontsize=9)
    axes[1, 0].set_ylabel(thumbnail_title, fontsize=9)
    return _save(figure, path)
