"""Pieces shared by the segmentation and pose examples (not a package of the library).

- :mod:`examples._common.drawing`: textured backgrounds and "paints" for generated datasets.
- :mod:`examples._common.datasets`: writing and reading the generated datasets (PNG files).
- :mod:`examples._common.models`: a timm backbone with a light FPN-style head.
- :mod:`examples._common.training`: the teacher / bicubic-student / learned-student training
  loops.
- :mod:`examples._common.reporting`: command-line flags, the results table and the figure.
- :mod:`examples._common.experiment`: the comparison both examples run, from the command
  line to the report.

The example scripts run as modules from the repository root
(``python -m examples.segmentation.run``) and import ``examples._common`` from there.
"""
