"""Losses of the ThumbDet method: moment matching, feature and logit distillation."""

from learnthumb.losses.feature import (
    FeatureDistillationLoss,
    align_feature_maps,
    feature_distillation_loss,
)
from learnthumb.losses.logit import LogitDistillationLoss, logit_distillation_loss, match_queries
from learnthumb.losses.moment import MomentMatchingLoss, channel_moments, moment_matching_loss

__all__ = [
    "FeatureDistillationLoss",
    "LogitDistillationLoss",
    "MomentMatchingLoss",
    "align_feature_maps",
    "channel_moments",
    "feature_distillation_loss",
    "logit_distillation_loss",
    "match_queries",
    "moment_matching_loss",
]
