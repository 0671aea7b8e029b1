"""Deformable-DETR detector: shapes, padding, presets, parameter groups, overfitting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import thumbdet
from thumbdet.models import (
    DetectorConfig,
    PositionEmbeddingSine,
    get_config,
    list_presets,
    sine_position_embedding,
)
from thumbdet.models.backbone import Backbone
from thumbdet.training.criterion import weighted_loss

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def tiny_model() -> thumbdet.DeformableDETR:
    torch.manual_seed(0)
    model = thumbdet.build_model("tiny", num_classes=NUM_CLASSES).eval()
    # At initialisation the box head outputs zeros (boxes = reference points, whatever the
    # image); give it weights so that box comparisons below test the image path too.
    torch.nn.init.normal_(model.bbox_embed[0].layers[-1].weight, std=0.1)
    return model


def _ceil_div(size: int, stride: int) -> int:
    return -(-size // stride)


@pytest.mark.parametrize(("height", "width"), [(67, 91), (64, 64), (33, 120)])
def test_forward_keys_and_shapes_on_odd_sizes(tiny_model, height, width):
    config = tiny_model.config
    with torch.no_grad():
        outputs = tiny_model(torch.rand(2, 3, height, width))
    assert {"pred_logits", "pred_boxes", "aux_outputs", "backbone_features"} <= set(outputs)
    assert outputs["pred_logits"].shape == (2, config.num_queries, NUM_CLASSES)
    assert outputs["pred_boxes"].shape == (2, config.num_queries, 4)
    boxes = outputs["pred_boxes"]
    assert torch.all((boxes > 0) & (boxes < 1))
    assert len(outputs["aux_outputs"]) == config.dec_layers - 1
    for aux in outputs["aux_outputs"]:
        assert aux["pred_logits"].shape == outputs["pred_logits"].shape
        assert aux["pred_boxes"].shape == outputs["pred_boxes"].shape
    features = outputs["backbone_features"]
    assert len(features) == 3
    for feature, channels, stride in zip(features, [32, 64, 128], [8, 16, 32], strict=True):
        assert feature.shape == (2, channels, _ceil_div(height, stride), _ceil_div(width, stride))


def test_paper_preset_layer_count_and_aux_outputs():
    config = get_config("paper_r50")
    assert (config.enc_layers, config.dec_layers, config.d_model, config.dim_feedforward) == (
        6, 6, 256, 1024,
    )  # fmt: skip
    assert (config.nheads, config.dec_n_points, config.num_queries, config.num_classes) == (
        8, 4, 300, 91,
    )  # fmt: skip
    assert "tiny" in list_presets() and "paper_r50" in list_presets()


def test_paper_r50_parameter_count_matches_reference():
    model = thumbdet.build_model("paper_r50")
    count = sum(parameter.numel() for parameter in model.parameters())
    assert abs(count - 40_069_665) / 40_069_665 < 0.005, count
    # Stem and layer1 frozen; frozen batch-norm has buffers, not parameters.
    assert not model.backbone.body.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in model.backbone.body.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.body.layer2.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_padding_content_is_ignored(tiny_model):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 80)
    mask = torch.zeros(2, 64, 80, dtype=torch.bool)
    mask[0, :, 56:] = True
    mask[1, 40:, :] = True
    noisy = images.clone()
    noisy[mask[:, None].expand_as(noisy)] = torch.rand(int(mask.sum()) * 3)
    with torch.no_grad():
        clean_out = tiny_model(images.masked_fill(mask[:, None], 0.0), mask)
        noisy_out = tiny_model(noisy, mask)
    torch.testing.assert_close(clean_out["pred_logits"], noisy_out["pred_logits"])
    torch.testing.assert_close(clean_out["pred_boxes"], noisy_out["pred_boxes"])


def test_padded_batch_equals_each_image_alone(tiny_model):
    torch.manual_seed(2)
    images = torch.rand(2, 3, 72, 96)
    mask = torch.zeros(2, 72, 96, dtype=torch.bool)
    mask[1, :, 64:] = True
    mask[1, 48:, :] = True
    with torch.no_grad():
        batched = tiny_model(images, mask)
        alone = tiny_model(images[1:], mask[1:])
    torch.testing.assert_close(batched["pred_logits"][1:], alone["pred_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched["pred_boxes"][1:], alone["pred_boxes"], atol=1e-5, rtol=0)


def test_mask_changes_outputs(tiny_model):
    # The mask must reach the transformer: marking a real region as padding changes outputs.
    images = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[:, :, 32:] = True
    with torch.no_grad():
        unmasked = tiny_model(images.masked_fill(mask[:, None], 0.0))
        masked = tiny_model(images, mask)
    assert not torch.allclose(unmasked["pred_boxes"], masked["pred_boxes"], atol=1e-4)
    assert not torch.allclose(unmasked["pred_logits"], masked["pred_logits"], atol=1e-4)


def test_eval_is_deterministic_under_no_grad(tiny_model):
    images = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        first = tiny_model(images)["pred_logits"]
        second = tiny_model(images)["pred_logits"]
    assert not first.requires_grad
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"with_box_refine": True},
        {"two_stage": True},
        {"with_box_refine": True, "two_stage": True},
    ],
)
def test_variants_forward_and_backward(flags):
    torch.manual_seed(0)
    model = thumbdet.build_model("tiny", num_classes=NUM_CLASSES, **flags)
    criterion = thumbdet.build_criterion(model.config)
    outputs = model(torch.rand(2, 3, 64, 72))
    assert outputs["pred_boxes"].shape == (2, model.config.num_queries, 4)
    assert ("enc_outputs" in outputs) == flags.get("two_stage", False)
    targets = [
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]
    losses = criterion(outputs, targets)
    assert set(losses) == set(criterion.weight_dict)
    weighted_loss(losses, criterion.weight_dict).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), name


def test_param_groups_cover_trainable_parameters_once():
    model = thumbdet.build_model("tiny", num_classes=NUM_CLASSES)
    groups = model.param_groups(lr=1e-3, lr_backbone=1e-4)
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped)) and set(grouped) == set(trainable)
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    assert lr_of[id(model.backbone.body.layer2[0].conv1.weight)] == 1e-4
    sampling = model.transformer.encoder.layers[0].self_attn.sampling_offsets.weight
    assert lr_of[id(sampling)] == pytest.approx(1e-4)
    assert lr_of[id(model.transformer.reference_points.weight)] == pytest.approx(1e-4)
    assert lr_of[id(model.query_embed.weight)] == 1e-3


def test_config_round_trip_and_overrides():
    config = get_config("tiny", num_classes=5, d_model=96, backbone_channels=[8, 16, 32, 64])
    assert config.backbone_channels == (8, 16, 32, 64)
    assert DetectorConfig.from_dict(config.to_dict()) == config
    # Earlier versions stored the training's optimiser settings too: dropped when read.
    older = {**config.to_dict(), "lr": 2e-4, "lr_backbone": 2e-5, "weight_decay": 1e-4}
    assert DetectorConfig.from_dict(older) == config
    model = thumbdet.build_model(config)
    assert model.config.preset == "tiny" and model.config.num_classes == 5
    assert model.backbone.num_channels == [16, 32, 64]


def test_bad_config_and_inputs_raise(tiny_model):
    with pytest.raises(TypeError, match="num_clases"):
        thumbdet.build_model("tiny", num_clases=3)
    with pytest.raises(ValueError, match="preset"):
        thumbdet.build_model("nope")
    with pytest.raises(ValueError, match="d_model"):
        get_config("tiny", d_model=80)
    with pytest.raises(ValueError, match="images"):
        tiny_model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="padding_mask"):
        tiny_model(torch.rand(1, 3, 32, 32), torch.zeros(1, 32, 31, dtype=torch.bool))
    with pytest.raises(TypeError, match="padding_mask"):
        tiny_model(torch.rand(1, 3, 32, 32), torch.zeros(1, 32, 32))


def test_backbone_weights_from_file(tmp_path):
    config = get_config("tiny")
    kwargs = {
        "layers": config.backbone_layers,
        "channels": config.backbone_channels,
        "stem_width": config.backbone_stem_width,
    }
    source = Backbone(config.backbone, **kwargs)
    path = tmp_path / "backbone.pth"
    state = {key: value.clone().normal_() for key, value in source.body.state_dict().items()}
    torch.save({"state_dict": {"module." + key: value for key, value in state.items()}}, path)
    # pretrained_backbone with a file loads the file, with no download
    model = thumbdet.build_model("tiny", backbone_weights=str(path), pretrained_backbone=True)
    torch.testing.assert_close(model.backbone.body.state_dict()["layer3.0.conv1.weight"],
                               state["layer3.0.conv1.weight"])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        thumbdet.build_model("tiny", backbone_weights=str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": state["conv1.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks"):
        thumbdet.build_model("tiny", backbone_weights=str(tmp_path / "partial.pth"))
    with pytest.raises(ValueError, match="pretrained"):
        thumbdet.build_model("tiny", pretrained_backbone=True)


def _synthetic_rectangles(count: int, size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    generator = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.2, 1.0]])
    images = torch.rand(count, 3, 1, 1, generator=generator).expand(-1, -1, size, size) * 0.3
    images = images.clone()
    targets = []
    for index in range(count):
        labels, boxes = [], []
        for _ in range(2):
            width, height = (
                (torch.rand(2, generator=generator) * 0.3 + 0.2).mul(size).int().tolist()
            )
            x0 = int(torch.randint(0, size - width, (1,), generator=generator))
            y0 = int(torch.randint(0, size - height, (1,), generator=generator))
            label = int(torch.randint(0, 2, (1,), generator=generator))
            images[index, :, y0 : y0 + height, x0 : x0 + width] = colours[label][:, None, None]
            labels.append(label)
            boxes.append([(x0 + width / 2) / size, (y0 + height / 2) / size,
                          width / size, height / size])  # fmt: skip
        targets.append({"labels": torch.tensor(labels), "boxes": torch.tensor(boxes)})
    return images, targets


def test_tiny_preset_overfits_synthetic_images():
    torch.manual_seed(0)
    images, targets = _synthetic_rectangles(4)
    model = thumbdet.build_model("tiny", num_classes=2)
    criterion = thumbdet.build_criterion(model.config)
    optimizer = torch.optim.AdamW(model.param_groups(lr=1e-3, lr_backbone=1e-3), weight_decay=1e-4)
    history = []
    for _ in range(60):
        loss = weighted_loss(criterion(model(images), targets), criterion.weight_dict)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.3 * history[0], history[::10]


@pytest.mark.build
def test_compiles_without_graph_breaks(tiny_model):
    images = torch.rand(2, 3, 64, 80)
    mask = torch.zeros(2, 64, 80, dtype=torch.bool)
    mask[1, :, 60:] = True
    with torch.no_grad():
        expected = tiny_model(images, mask)
        compiled = torch.compile(tiny_model, backend="aot_eager", fullgraph=True)
        outputs = compiled(images, mask)
    torch.testing.assert_close(outputs["pred_logits"], expected["pred_logits"])
    torch.testing.assert_close(outputs["pred_boxes"], expected["pred_boxes"])


def test_compiles_before_any_kernel_is_built(tmp_path):
    # A fresh machine: empty build cache, nothing loaded. The "auto" backend must not probe the
    # cache (hashing, dlopen) inside the traced region, or fullgraph compilation fails.
    script = textwrap.dedent(
        """
        import torch, thumbdet
        torch.manual_seed(0)
        model = thumbdet.build_model("tiny", num_classes=3).eval()
        images, mask = torch.rand(1, 3, 48, 64), torch.zeros(1, 48, 64, dtype=torch.bool)
        with torch.no_grad():
            compiled = torch.compile(model, backend="eager", fullgraph=True)
            outputs = compiled(images, mask)
        print(tuple(outputs["pred_logits"].shape))
        """
    )
    environment = {**os.environ, "THUMBDET_BUILD_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    environment.pop("THUMBDET_MSDA_BACKEND", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("3)")
    assert not any(tmp_path.iterdir())


def test_public_api_surface():
    expected = {"build_model", "build_criterion", "PRESETS", "list_presets", "PostProcess"}
    assert expected <= set(thumbdet.__all__)
    for name in thumbdet.__all__:
        assert getattr(thumbdet, name) is not None
    with pytest.raises(AttributeError):
        _ = thumbdet.no_such_name


def test_position_encoding_of_valid_pixels_ignores_padding():
    unpadded = torch.zeros(1, 5, 7, dtype=torch.bool)
    padded = torch.zeros(1, 9, 12, dtype=torch.bool)
    padded[:, 5:, :] = True
    padded[:, :, 7:] = True
    small = sine_position_embedding(unpadded, num_pos_feats=16)
    large = PositionEmbeddingSine(16)(padded)
    assert small.shape == (1, 32, 5, 7) and large.shape == (1, 32, 9, 12)
    torch.testing.assert_close(large[:, :, :5, :7], small)
    # y channels vary down the rows only, x channels along the columns only
    assert torch.all(small[:, :16, :, :1] == small[:, :16, :, 1:2])
    assert torch.all(small[:, 16:, :1, :] == small[:, 16:, 1:2, :])
