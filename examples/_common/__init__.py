"""Pieces shared by the segmentation and pose examples (not a package of the library).

- :mod:`_common.drawing`: textured backgrounds and "paints" for generated datasets.
- :mod:`_common.models`: a timm backbone with a light FPN-style head.
- :mod:`_common.training`: the teacher / bicubic-student / learned-student training loops.
- :mod:`_common.reporting`: command-line flags, the results table and the figure.

The example scripts put ``examples/`` on ``sys.path`` and import ``_common`` from there.
"""
