"""Writing and reading the generated datasets of the examples: PNG images and their targets.

Layout of both examples: ``root/spec.json`` (what was generated) and, per split,
``root/<split>/images/NNNN.png`` next to the example's own targets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from examples._common import drawing

Target = TypeVar("Target")


def write_generated_dataset(
    root: Path,
    spec: dict[str, Any],
    draw_sample: Callable[[np.random.Generator, tuple[int, int]], tuple[np.ndarray, Target]],
    save_targets: Callable[[Path, dict[str, Target]], None],
) -> None:
    """Draw every split's samples from one seeded generator; reuse a folder of the same spec.

    Args:
        root: the dataset's folder.
        spec: ``{"splits": {name: count}, "size": [H, W], "seed": int, ...}``; written to
            ``root/spec.json`` last, so a folder with the same spec is complete.
        draw_sample: ``draw_sample(rng, (H, W))`` -> an image (H, W, 3) in [0, 1] and its target.
        save_targets: ``save_targets(split_folder, {"NNNN.png": target})`` writes a split's
            targets.
    """
    spec_path = root / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) == spec:
        return
    rng = np.random.default_rng(spec["seed"])
    size = tuple(spec["size"])
    for split, count in spec["splits"].items():
        folder = root / split
        (folder / "images").mkdir(parents=True, exist_ok=True)
        targets = {}
        for index in range(count):
            name = f"{index:04d}.png"
            image, targets[name] = draw_sample(rng, size)
            drawing.save_png(image, folder / "images" / name)
        save_targets(folder, targets)
    spec_path.write_text(json.dumps(spec))


def load_images(paths: Sequence[Path]) -> torch.Tensor:
    """The PNG images at ``paths`` as one float tensor (N, 3, H, W) in [0, 1]."""
    images = np.stack([drawing.load_png(path) for path in paths])  # (N, H, W, 3) uint8
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
