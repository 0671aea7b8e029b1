"""Converters from the official Deformable DETR and Hugging Face transformers into thumbdet.

transformers' ``DeformableDetrForObjectDetection`` is built with small random weights (a timm
ResNet-18, nothing is downloaded) and must give our converted detector's outputs on the same
normalised images, with and without padding. The official format is a checkpoint file that
these tests write, in that layout, from a randomly initialised thumbdet detector.
"""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

from tests.thumbdet.helpers import write_tiny_coco
from thumbdet.checkpoints import load_checkpoint, load_detector
from thumbdet.checkpoints.convert import (
    ConversionError,
    convert_official,
    convert_transformers,
    read_coco_categories,
    save_converted,
)
from thumbdet.cli import main
from thumbdet.models import build_model
from thumbdet.models.deformable_detr import IMAGENET_MEAN, IMAGENET_STD
from thumbdet.training.modes import load_teacher

TOLERANCE = 1e-4

# (with_box_refine, two_stage); transformers has no two-stage without box refinement.
VARIANTS = [(False, False), (True, False), (True, True)]

# A small detector of standard architecture (the official layout cannot describe other
# ResNet widths): ResNet-18, one encoder and two decoder layers of width 64.
SMALL = dict(
    backbone="resnet18.tv_in1k",
    d_model=64,
    nheads=4,
    enc_layers=1,
    dec_layers=2,
    dim_feedforward=128,
    num_queries=10,
    num_classes=9,
    dropout=0.0,
)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images in [0, 1] and a padding mask (the second image padded right and below)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 96, generator=generator)
    padding_mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    padding_mask[1, 40:] = True
    padding_mask[1, :, 72:] = True
    return images, padding_mask


def _outputs(model, images, padding_mask):
    with torch.no_grad():
        outputs = model(images, padding_mask)
    return outputs["pred_logits"], outputs["pred_boxes"]


def _max_difference(first, second) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True))


# ---------------------------------------------------------------------------------- official
def _to_official_keys(key: str) -> str:
    """Inverse of the converter's rename: thumbdet key -> fundamentalvision key."""
    rules = (
        (r"backbone\.body\.(.+)", r"backbone.0.body.\1"),
        (r"(transformer\.(?:en|de)coder\.layers\.\d+)\.ffn\.(linear[12]\..+)", r"\1.\2"),
        (r"(transformer\.encoder\.layers\.\d+)\.norm\.(.+)", r"\1.norm1.\2"),
        (r"(transformer\.encoder\.layers\.\d+)\.ffn\.norm\.(.+)", r"\1.norm2.\2"),
        (r"(transformer\.decoder\.layers\.\d+)\.norm_cross\.(.+)", r"\1.norm1.\2"),
        (r"(transformer\.decoder\.layers\.\d+)\.norm_self\.(.+)", r"\1.norm2.\2"),
        (r"(transformer\.decoder\.layers\.\d+)\.ffn\.norm\.(.+)", r"\1.norm3.\2"),
    )
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(replacement)
    return key


def _official_checkpoint(model, **args) -> dict:
    """``model`` as main.py of the official code saves it (``model``, ``args``, ``epoch``...)."""
    config = model.config
    state = {_to_official_keys(key): value for key, value in model.state_dict().items()}
    # The official model hands its heads to the decoder: they appear twice in its state dict.
    for key, value in model.state_dict().items():
        if key.startswith("bbox_embed.") and config.with_box_refine:
            state[f"transformer.decoder.{key}"] = value
        if key.startswith("class_embed.") and config.two_stage:
            state[f"transformer.decoder.{key}"] = value
    namespace = argparse.Namespace(
        backbone=config.backbone.split(".")[0],
        dilation=False,
        position_embedding="sine",
        masks=False,
        hidden_dim=config.d_model,
        nheads=config.nheads,
        enc_layers=config.enc_layers,
        dec_layers=config.dec_layers,
        dim_feedforward=config.dim_feedforward,
        dropout=config.dropout,
        num_feature_levels=config.num_feature_levels,
        enc_n_points=config.enc_n_points,
        dec_n_points=config.dec_n_points,
        num_queries=config.num_queries,
        with_box_refine=config.with_box_refine,
        two_stage=config.two_stage,
        aux_loss=True,
        dataset_file="coco",
        **args,
    )
    return {"model": state, "args": namespace, "epoch": 49, "lr_scheduler": {"step_size": 40}}


def _random_detector(**overrides):
    torch.manual_seed(1)
    model = build_model("paper_r50", **dict(SMALL, **overrides)).eval()
    with torch.no_grad():  # move zero-initialised heads off zero: every weight must matter
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


@pytest.mark.parametrize("refine, two_stage", [*VARIANTS, (False, True)])
def test_official_round_trip(tmp_path, refine, two_stage):
    source = _random_detector(with_box_refine=refine, two_stage=two_stage)
    path = tmp_path / "checkpoint0049.pth"
    torch.save(_official_checkpoint(source), path)

    converted = convert_official(path)

    assert converted.config.with_box_refine == refine
    assert converted.config.two_stage == two_stage
    assert (converted.config.d_model, converted.config.num_queries) == (64, 10)
    assert converted.category_ids == list(range(9))
    assert set(converted.state_dict) == set(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(converted.state_dict[key], value), key
    images, padding_mask = _images()
    for mask in (None, padding_mask):
        expected = _outputs(source, images, mask)
        assert _max_difference(_outputs(converted.build(), images, mask), expected) == 0.0


@pytest.mark.parametrize("refine, two_stage", [(False, False), (True, True)])
def test_official_category_selection_keeps_those_logits(refine, two_stage):
    source = _random_detector(with_box_refine=refine, two_stage=two_stage)
    converted = convert_official(_official_checkpoint(source), category_ids=[3, 7])
    assert converted.config.num_classes == 2
    assert converted.category_names == ["3", "7"]
    images, padding_mask = _images()
    logits, boxes = _outputs(converted.build(), images, padding_mask)
    expected_logits, expected_boxes = _outputs(source, images, padding_mask)
    # Two output rows instead of nine is another matrix product shape: the BLAS may sum in
    # another order (it does on AMD EPYC with torch 2.14.1), so equal up to float rounding.
    torch.testing.assert_close(logits, expected_logits[..., [3, 7]], rtol=0, atol=1e-5)
    assert torch.equal(boxes, expected_boxes)


def test_unmappable_keys_are_listed_in_one_error():
    checkpoint = _official_checkpoint(_random_detector())
    checkpoint["model"]["transformer.extra_head.weight"] = torch.zeros(3)
    del checkpoint["model"]["transformer.level_embed"]
    with pytest.raises(ConversionError) as error:
        convert_official(checkpoint)
    message = str(error.value)
    assert "\n" not in message
    assert "no place in thumbdet's model: 1 (transformer.extra_head.weight)" in message
    assert "missing from the source: 1 (transformer.level_embed)" in message


def test_shape_mismatch_is_named():
    checkpoint = _official_checkpoint(_random_detector())
    checkpoint["model"]["query_embed.weight"] = torch.zeros(10, 64)
    with pytest.raises(ConversionError, match=r"query_embed\.weight \(10, 64\) vs query_em"):
        convert_official(checkpoint)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"num_feature_levels": 1}, "single-scale"),
        ({"dilation": True}, "DC5"),
        ({"backbone": "swin_t"}, "torchvision ResNet"),
    ],
)
def test_official_unsupported_settings_are_refused(setting, message):
    checkpoint = _official_checkpoint(_random_detector())
    vars(checkpoint["args"]).update(setting)
    with pytest.raises(ConversionError, match=message):
        convert_official(checkpoint)


def test_official_without_args_is_refused():
    with pytest.raises(ConversionError, match="no 'args'"):
        convert_official({"model": _random_detector().state_dict()})


def test_bad_category_ids_are_refused():
    checkpoint = _official_checkpoint(_random_detector())
    with pytest.raises(ConversionError, match=r"category_ids must be distinct ids in \[0, 9\)"):
        convert_official(checkpoint, category_ids=[3, 9])


# ---------------------------------------------------------------------------------- CLI
def test_cli_convert_then_eval_and_teacher(tmp_path, capsys):
    images_dir, annotation_file = write_tiny_coco(tmp_path / "data", num_images=2, size=(40, 48))
    source = tmp_path / "official.pth"
    torch.save(_official_checkpoint(_random_detector()), source)
    output = tmp_path / "teacher"

    argv = ["convert", "--from", "official", str(source), "--output", str(output)]
    assert main([*argv, "--categories", str(annotation_file)]) == 0
    assert capsys.readouterr().out.strip() == str(output / "checkpoint.pth")

    checkpoint = load_checkpoint(output)  # the folder reads its checkpoint.pth
    assert checkpoint["meta"]["category_ids"] == [3, 7]
    assert checkpoint["meta"]["category_names"] == ["class3", "class7"]
    assert checkpoint["meta"]["converted_from"] == "official:official.pth"
    assert load_detector(output).checkpoint_meta["mode"] == "teacher"
    assert load_teacher(output, "paper_r50", [3, 7]).config.num_classes == 2  # --teacher
    metrics_file = tmp_path / "metrics.json"
    argv = ["eval", "--checkpoint", str(output), "--val-images", str(images_dir)]
    argv += ["--val-ann", str(annotation_file), "--output", str(metrics_file)]
    argv += ["--num-workers", "0", "--device", "cpu", "--short-side", "32", "--max-size", "64"]
    assert main(argv) == 0
    assert set(json.loads(metrics_file.read_text())) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_cli_convert_error_is_one_line(tmp_path, capsys):
    checkpoint = _official_checkpoint(_random_detector())
    checkpoint["model"]["transformer.extra_head.weight"] = torch.zeros(3)
    source = tmp_path / "official.pth"
    torch.save(checkpoint, source)
    argv = ["convert", "--from", "official", str(source), "--output", str(tmp_path / "out")]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("thumbdet convert: error: cannot convert")
    assert "transformer.extra_head.weight" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_read_coco_categories(tmp_path):
    _, annotation_file = write_tiny_coco(tmp_path, num_images=1, category_ids=(7, 3))
    assert read_coco_categories(annotation_file) == ([3, 7], ["class3", "class7"])
    with pytest.raises(ValueError, match="expected a COCO annotation file"):
        read_coco_categories(tmp_path)


# ---------------------------------------------------------------------------------- transformers
def _transformers_model(refine: bool, two_stage: bool):
    transformers = pytest.importorskip("transformers")
    config = transformers.DeformableDetrConfig(
        backbone="resnet18",  # timm, random weights: use_pretrained_backbone stays False
        d_model=64,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=10,
        two_stage_num_proposals=10,
        num_labels=5,
        with_box_refine=refine,
        two_stage=two_stage,
    )
    torch.manual_seed(2)
    model = transformers.DeformableDetrForObjectDetection(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def _transformers_outputs(model, images, padding_mask):
    """transformers takes normalised images, zero where padded, and a mask of valid pixels."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    if padding_mask is None:
        padding_mask = torch.zeros_like(images[:, 0], dtype=torch.bool)
    pixel_values = ((images - mean) / std).masked_fill(padding_mask[:, None], 0.0)
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, pixel_mask=(~padding_mask).long())
    return outputs.logits, outputs.pred_boxes


@pytest.mark.parametrize("source_kind", ["model", "folder", "state_dict"])
@pytest.mark.parametrize("refine, two_stage", VARIANTS)
def test_transformers_outputs_match(tmp_path, refine, two_stage, source_kind):
    reference = _transformers_model(refine, two_stage)
    if source_kind == "model":
        converted = convert_transformers(reference)
    elif source_kind == "folder":
        reference.save_pretrained(tmp_path)  # transformers 5 writes the version-4 key names
        converted = convert_transformers(tmp_path)
    else:
        converted = convert_transformers(reference.state_dict(), reference.config)

    config = converted.config
    assert (config.with_box_refine, config.two_stage) == (refine, two_stage)
    assert (config.num_classes, config.num_queries, config.d_model) == (5, 10, 64)
    assert (config.enc_layers, config.dec_layers, config.nheads) == (1, 2, 4)
    assert converted.category_names == [f"LABEL_{index}" for index in range(5)]
    detector = converted.build()
    images, padding_mask = _images()
    for mask in (None, padding_mask):
        expected = _transformers_outputs(reference, images, mask)
        assert _max_difference(_outputs(detector, images, mask), expected) <= TOLERANCE


def test_transformers_folder_saves_and_reloads(tmp_path):
    reference = _transformers_model(True, False)
    reference.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from", "transformers", str(tmp_path / "hf"), "--output",
                 str(tmp_path / "ours")]) == 0  # fmt: skip
    detector = load_detector(tmp_path / "ours")
    images, padding_mask = _images()
    expected = _transformers_outputs(reference, images, padding_mask)
    assert _max_difference(_outputs(detector, images, padding_mask), expected) <= TOLERANCE


def test_transformers_unsupported_config_is_refused():
    reference = _transformers_model(False, False)
    config = reference.config.to_dict()
    config["decoder_ffn_dim"] = 256
    with pytest.raises(ConversionError, match="encoder_ffn_dim=128 differs from decoder_ffn_dim"):
        convert_transformers(reference.state_dict(), config)
    config = dict(reference.config.to_dict(), backbone_config={"model_type": "resnet"})
    with pytest.raises(ConversionError, match="expected a timm ResNet"):
        convert_transformers(reference.state_dict(), config)


def test_transformers_unmappable_keys_are_listed():
    reference = _transformers_model(False, False)
    state = dict(reference.state_dict())
    state["model.decoder.layers.0.extra.weight"] = torch.zeros(2)
    del state["model.decoder.layers.1.self_attn.v_proj.bias"]
    with pytest.raises(ConversionError) as error:
        convert_transformers(state, reference.config)
    message = str(error.value)
    assert "model.decoder.layers.0.extra.weight" in message
    # a q/k/v triple that lacks a part cannot be merged: its parts are named
    assert "model.decoder.layers.1.self_attn.q_proj.bias" in message
    assert "transformer.decoder.layers.1.self_attn.in_proj_bias" in message


def test_save_converted_refuses_a_file_as_output(tmp_path):
    converted = convert_official(_official_checkpoint(_random_detector()))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="output must be a folder"):
        save_converted(converted, tmp_path / "file")
