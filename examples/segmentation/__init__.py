"""The segmentation example: ``python -m examples.segmentation.run`` from the repository root."""
