"""How to run a detector for inference: the fast-path options, declared without torch.

:class:`InferenceOptions` is what :func:`thumbdet.fastpath.prepare_model` and
:func:`thumbdet.fastpath.make_runner` apply, and a settings class (:mod:`thumbdet.settings`)
from which ``thumbdet bench`` generates its flags. It lives apart from
:mod:`thumbdet.fastpath` so that the command's module imports without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from thumbdet.settings import setting

__all__ = ["AMP_DTYPES", "AMP_SCOPES", "GRAD_MODES", "InferenceOptions"]

GRAD_MODES = ("inference_mode", "no_grad", "enabled")
AMP_DTYPES = ("bfloat16", "float16")
"""Autocast dtypes, by their ``torch`` names."""
AMP_SCOPES = ("model", "backbone")


def _msda_backends() -> tuple[str, ...]:
    """The MSDA backends, as :mod:`thumbdet.ops` defines them (imports torch: called only
    when a parser or a check needs them)."""
    from thumbdet.ops import BACKENDS

    return BACKENDS


@dataclass
class InferenceOptions:
    """Inference fast paths.

    Attributes:
        grad_mode: ``"inference_mode"`` (fastest), ``"no_grad"`` or ``"enabled"``.
        channels_last: NHWC memory format for the convolutions (weights and input).
        amp: autocast; ``amp_dtype`` picks the dtype and ``amp_scope`` what runs in it.
        amp_dtype: ``"bfloat16"`` / ``"float16"``; ``None``: bfloat16 on CPU, float16 on CUDA.
        amp_scope: ``"model"`` (the whole forward) or ``"backbone"`` (only the convolutional
            backbone, whose features return to float32; the transformer stays float32).
        compile: wrap the model in ``torch.compile``.
        compile_mode: ``torch.compile`` mode (``None``, ``"reduce-overhead"``,
            ``"max-autotune"``).
        msda_backend: backend of every MSDA module (``"auto"``, ``"pytorch"``, ``"cpu"``,
            ``"cuda"``).
        cuda_graph: capture one call in a CUDA graph and replay it (fixed input size; CUDA only).
    """

    grad_mode: str = setting(
        "inference_mode", "autograd mode of the forward", choices=GRAD_MODES, cli=False
    )
    channels_last: bool = setting(False, "NHWC convolutions")
    amp: bool = setting(False, "autocast (bf16 on CPU, fp16 on GPU)")
    amp_dtype: str | None = setting(None, "instead of --amp's", choices=AMP_DTYPES)
    amp_scope: str = setting(
        "model", "autocast the whole model or only the backbone", choices=AMP_SCOPES
    )
    compile: bool = setting(False, "torch.compile the model")
    compile_mode: str | None = setting(None, "torch.compile mode, e.g. reduce-overhead")
    msda_backend: str = setting(
        "auto",
        "multi-scale deformable attention backend (thumbdet.ops)",
        choices=_msda_backends,
    )
    cuda_graph: bool = setting(False, "replay a CUDA graph")

    def __post_init__(self) -> None:
        for name, allowed in (("grad_mode", GRAD_MODES), ("amp_scope", AMP_SCOPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if self.amp_dtype is not None and self.amp_dtype not in AMP_DTYPES:
            raise ValueError(
                f"amp_dtype: expected one of {AMP_DTYPES} or None, got {self.amp_dtype!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (field name -> value)."""
        return asdict(self)
