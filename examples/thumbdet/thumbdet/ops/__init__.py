"""Operators of ThumbDet: multi-scale deformable attention (MSDA) with three backends.

``ms_deform_attn`` / ``MSDeformAttn`` run on a pure-PyTorch path everywhere; compiled C++ (CPU)
and CUDA kernels are used when built, and the ``auto`` backend compiles the kernel on its first
eager call (``THUMBDET_MSDA_AUTO_BUILD=0`` switches that off). Importing this package never
compiles anything.
"""

from ._backends import BACKEND_ENV_VAR, BACKENDS, available_backends, traceable_ms_deform_attn
from ._macs import ms_deform_attn_macs, uncounted_ms_deform_attn
from ._reference import ms_deform_attn_pytorch
from .deformable_attention import MSDeformAttn, ms_deform_attn

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "MSDeformAttn",
    "available_backends",
    "ms_deform_attn",
    "ms_deform_attn_macs",
    "ms_deform_attn_pytorch",
    "traceable_ms_deform_attn",
    "uncounted_ms_deform_attn",
]
