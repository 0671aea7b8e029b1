"""The student arms of the quality suite: a downsampler and how it is trained.

Kept apart from the runner's code: an arm's settings are part of its runs' keys, so adding or
changing an arm here leaves the kept runs of the other arms valid (see
:func:`benchmarks.quality.runner.code_version`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ARMS", "DEFAULT_ARMS", "Arm"]


@dataclass(frozen=True)
class Arm:
    """One student recipe: a downsampler and how it is trained.

    Attributes:
        downsampler: registry name of :func:`learnthumb.create_downsampler`.
        kwargs: its constructor's arguments beyond the scale.
        distill: train through :class:`learnthumb.ThumbnailDistillation` (moment, feature
            and, for classifiers, logit distillation) rather than the task loss alone.
        stage1_fraction: share of the steps spent in stage one (moment matching alone).
        weights: the distillation weights (``DistillWeights`` fields: moment, logit, feature).
        downsampler_lr: learning rate of the downsampler, as a multiple of the model's.
    """

    downsampler: str
    kwargs: dict = field(default_factory=dict)
    distill: bool = False
    stage1_fraction: float = 0.0
    weights: dict = field(default_factory=dict)
    downsampler_lr: float = 1.0


ARMS: dict[str, Arm] = {
    "nearest": Arm("nearest"),
    "area": Arm("area"),
    "bicubic": Arm("bicubic"),
    # The control: the same distillation losses on a fixed bicubic thumbnail.
    "bicubic_kd": Arm("bicubic", distill=True),
    # The paper's recipe: ConvDownsampler, stage one on the moment loss, then everything.
    "thumbdet": Arm("thumbdet", distill=True, stage1_fraction=0.2),
    # The paper's module trained end to end on the task loss only.
    "thumbdet_task": Arm("thumbdet"),
    # The same without its final ReLU: thumbdet_linear - thumbdet_task isolates the ReLU.
    "thumbdet_linear": Arm("thumbdet", kwargs={"final_activation": False}),
    # The paper's recipe without stage one: thumbdet - thumbdet_one_stage isolates stage one.
    "thumbdet_one_stage": Arm("thumbdet", distill=True),
    # Bicubic plus a zero-initialised learned residual, end to end on the task loss.
    "residual": Arm("residual", downsampler_lr=3.0),
    "residual_kd": Arm("residual", distill=True, downsampler_lr=3.0),
    # The same with its residual branch centred on the cells, as the bicubic base is (the
    # paper's layers put it 1.5 input pixels up and left at 4x): residual_centred - residual
    # isolates that offset (and the 4x4 kernels that remove it).
    "residual_centred": Arm("residual", kwargs={"centred": True}, downsampler_lr=3.0),
    # The reference: the teacher fine-tuned with the students' budget at full size (no
    # thumbnail), so that it has trained as many steps as they have.
    "full_size": Arm("identity"),
    # The families of issue 11, end to end on the task loss like "residual".
    "learned_resizer": Arm("learned_resizer", downsampler_lr=3.0),
    "space_to_depth": Arm("space_to_depth", downsampler_lr=3.0),
    # Bicubic plus 21 learned channels of each cell's pixels (24 in all: half of a 4x4 RGB
    # cell's 48 values); the student's stem is widened (learnthumb.widen_input_conv, new
    # weights zero) to read them.
    "wide": Arm("wide", kwargs={"extra_channels": 21}, downsampler_lr=3.0),
    # Content-adaptive sampling (Recasens et al. 2018), end to end; dense outputs unwarped.
    "saliency_sampler": Arm("saliency_sampler", downsampler_lr=3.0),
}
# Run by default (residual_kd, thumbdet_linear and thumbdet_one_stage on request: --arms ...).
DEFAULT_ARMS = (
    "nearest",
    "area",
    "bicubic",
    "bicubic_kd",
    "thumbdet",
    "thumbdet_task",
    "residual",
    "learned_resizer",
    "space_to_depth",
    "saliency_sampler",
    "wide",
)
