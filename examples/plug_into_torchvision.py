"""A learned downsampler in front of a detector that is not ours (torchvision Faster R-CNN).

    python examples/plug_into_torchvision.py

Random weights, random images: this shows the plumbing, not accuracy. ``Thumbnailed`` feeds
the detector 4x thumbnails; ground-truth boxes go *down* to thumbnail coordinates for training
and predicted boxes come back *up* to the original image with ``rescale_boxes``.
"""

from __future__ import annotations

import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

from learnthumb import (
    ConvDownsampler,
    Thumbnailed,
    moment_matching_loss,
    rescale_boxes,
    thumbnail_size,
)


def main() -> None:
    torch.manual_seed(0)
    image_size, scale = (256, 320), 4
    small = thumbnail_size(image_size, scale)  # (64, 80)
    images = torch.rand(2, 3, *image_size)

    # torchvision detectors resize their input (800 px by default): pin that resize to the
    # thumbnail's own size, or it would blow the thumbnail back up and save nothing.
    detector = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=3,
        min_size=min(small),
        max_size=max(small),
        box_score_thresh=0.0,
    )
    net = Thumbnailed(detector, ConvDownsampler(scale))

    # training: targets in full-image pixels -> thumbnail pixels, then one step on
    # detection loss + moment matching (Eq. (5)); the downsampler learns from both.
    targets = [
        {"boxes": torch.tensor([[32.0, 40.0, 160.0, 200.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[100.0, 20.0, 300.0, 120.0]]), "labels": torch.tensor([2])},
    ]
    small_targets = [
        {**target, "boxes": rescale_boxes(target["boxes"], image_size, small)} for target in targets
    ]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()
    losses = net(images, small_targets)  # Thumbnailed forwards the targets to the detector
    loss = sum(losses.values()) + moment_matching_loss(images, net.thumbnail(images))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print("training losses:", {name: round(value.item(), 4) for name, value in losses.items()})

    # inference: boxes come out in thumbnail pixels; map them back to the original image.
    net.eval()
    with torch.no_grad():
        detections = net(images)
    for index, detection in enumerate(detections):
        boxes = rescale_boxes(detection["boxes"], small, image_size)
        print(
            f"image {index}: {len(boxes)} boxes; thumbnail-space max {detection['boxes'].max():.1f}"
            f" (<= {max(small)}), original-space max {boxes.max():.1f} (<= {max(image_size)})"
        )


if __name__ == "__main__":
    main()
