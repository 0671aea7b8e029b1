"""learnthumb: learned thumbnails for detection, segmentation and pose.

A tiny CNN turns a full-size image into a 2x/4x smaller thumbnail that keeps what a downstream
network needs; distillation from a full-resolution teacher keeps most of its accuracy. The
method of *ThumbDet: One thumbnail image is enough for object detection*, made reusable.
"""

from learnthumb.distill import DistillationOutput, ThumbnailDistillation
from learnthumb.downsamplers import (
    RECOMMENDED_DOWNSAMPLER,
    ConvDownsampler,
    InterpolateDownsampler,
    LearnedResizer,
    ResidualDownsampler,
    SpaceToDepthDownsampler,
    WideDownsampler,
    create_downsampler,
    downsample_padding_mask,
    list_downsamplers,
    register_downsampler,
    thumbnail_size,
)
from learnthumb.export import export_onnx, export_program
from learnthumb.health import (
    ThumbnailHealthReport,
    ThumbnailHealthWarning,
    check_thumbnail_health,
    constant_channel_fraction,
)
from learnthumb.losses import (
    FeatureDistillationLoss,
    LogitDistillationLoss,
    MomentMatchingLoss,
    feature_distillation_loss,
    logit_distillation_loss,
    moment_matching_loss,
)
from learnthumb.metrics import (
    LatencyStats,
    accuracy_drop_rate,
    count_macs,
    measure_latency,
    register_mac_formula,
)
from learnthumb.pretrained import from_pretrained, load_pretrained_config, save_pretrained
from learnthumb.query_filter import QueryFilter, query_filter
from learnthumb.rescale import rescale_boxes, rescale_keypoints, upsample_padded, upsample_to
from learnthumb.saliency_sampler import SaliencySampler, saliency_sample
from learnthumb.schedule import DistillWeights, Safeguards, TwoStageSchedule
from learnthumb.stem import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_input_conv,
    normalize_image_channels,
    widen_input_conv,
)
from learnthumb.taps import FeatureTap
from learnthumb.warps import SeparableWarp
from learnthumb.wrappers import Thumbnailed

__version__ = "0.1.0"

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RECOMMENDED_DOWNSAMPLER",
    "ConvDownsampler",
    "DistillWeights",
    "DistillationOutput",
    "FeatureDistillationLoss",
    "FeatureTap",
    "InterpolateDownsampler",
    "LatencyStats",
    "LearnedResizer",
    "LogitDistillationLoss",
    "MomentMatchingLoss",
    "QueryFilter",
    "ResidualDownsampler",
    "Safeguards",
    "SaliencySampler",
    "SeparableWarp",
    "SpaceToDepthDownsampler",
    "ThumbnailDistillation",
    "ThumbnailHealthReport",
    "ThumbnailHealthWarning",
    "Thumbnailed",
    "TwoStageSchedule",
    "WideDownsampler",
    "__version__",
    "accuracy_drop_rate",
    "check_thumbnail_health",
    "constant_channel_fraction",
    "count_macs",
    "create_downsampler",
    "downsample_padding_mask",
    "export_onnx",
    "export_program",
    "feature_distillation_loss",
    "find_input_conv",
    "from_pretrained",
    "list_downsamplers",
    "load_pretrained_config",
    "logit_distillation_loss",
    "measure_latency",
    "moment_matching_loss",
    "normalize_image_channels",
    "query_filter",
    "register_downsampler",
    "register_mac_formula",
    "rescale_boxes",
    "rescale_keypoints",
    "saliency_sample",
    "save_pretrained",
    "thumbnail_size",
    "upsample_padded",
    "upsample_to",
    "widen_input_conv",
]
