"""The pose example: ``python -m examples.pose.run`` from the repository root."""
