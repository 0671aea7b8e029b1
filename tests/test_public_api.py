"""The public API surface: every name in __all__ exists and nothing unexpected leaks."""

import learnthumb
from tests.python_run import run_python

EXPECTED = {
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConvDownsampler",
    "DistillWeights",
    "DistillationOutput",
    "FeatureDistillationLoss",
    "FeatureTap",
    "InterpolateDownsampler",
    "LatencyStats",
    "LogitDistillationLoss",
    "MomentMatchingLoss",
    "QueryFilter",
    "ResidualDownsampler",
    "Safeguards",
    "ThumbnailDistillation",
    "Thumbnailed",
    "TwoStageSchedule",
    "__version__",
    "accuracy_drop_rate",
    "count_macs",
    "create_downsampler",
    "downsample_padding_mask",
    "feature_distillation_loss",
    "list_downsamplers",
    "logit_distillation_loss",
    "measure_latency",
    "moment_matching_loss",
    "query_filter",
    "register_downsampler",
    "register_mac_formula",
    "rescale_boxes",
    "rescale_keypoints",
    "thumbnail_size",
    "upsample_padded",
    "upsample_to",
}


def test_all_holds_the_documented_api_and_every_name_exists():
    assert set(learnthumb.__all__) >= EXPECTED
    for name in learnthumb.__all__:
        assert hasattr(learnthumb, name), name


def test_every_public_callable_has_a_docstring():
    for name in learnthumb.__all__:
        obj = getattr(learnthumb, name)
        if callable(obj):
            assert obj.__doc__ and len(obj.__doc__.strip()) > 20, name


def test_import_does_not_load_scipy():
    """scipy serves one optional feature (Hungarian pairing): it is imported when used."""
    code = "import learnthumb, sys; assert 'scipy' not in sys.modules, 'scipy was imported'"
    run_python("-c", code, timeout=120)  # asserts that the import succeeded
