"""save_pretrained / from_pretrained: round trips, the file format, bad input, atomic saves."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import learnthumb
from learnthumb import (
    Thumbnailed,
    create_downsampler,
    from_pretrained,
    list_downsamplers,
    load_pretrained_config,
    save_pretrained,
)
from learnthumb.pretrained import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME

# Non-default constructor arguments: a round trip that forgot them would build other shapes.
NON_DEFAULT_KWARGS: dict[str, dict[str, object]] = {
    "thumbdet": {"hidden_channels": 8},
    "single_conv": {"kernel_size": 3},
    "five_layer": {"hidden_channels": 6, "kernel_size": (5, 3, 3, 1, 1)},
    "residual": {"hidden_channels": 8, "mode": "bilinear"},
    "learned_resizer": {"channels": 8, "num_blocks": 2},
    "space_to_depth": {"out_channels": 5, "kernel_size": 3},
    "wide": {"extra_channels": 4},
    "bicubic": {"antialias": False},
    "saliency_sampler": {"hidden_channels": 4, "uniform_weight": 0.25},
}


@torch.no_grad()
def _perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every floating parameter and buffer away from its initialisation."""
    generator = torch.Generator().manual_seed(seed)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator)).abs_()
    return module


def _downsampler(name: str, scale: int = 2) -> nn.Module:
    return _perturb(create_downsampler(name, scale, **NON_DEFAULT_KWARGS.get(name, {}))).eval()


def _factory_model(out_channels: int = 5) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, out_channels, 3, padding=1), nn.ReLU())


# -------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", list_downsamplers())
def test_every_registered_downsampler_round_trips(name, tmp_path):
    down = _downsampler(name)
    save_pretrained(down, tmp_path)
    loaded = from_pretrained(tmp_path)
    assert type(loaded) is type(down)
    assert not loaded.training
    for key, value in down.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.rand(2, 3, 19, 26)
    with torch.no_grad():
        assert torch.equal(loaded(images), down(images))


def test_a_timm_student_round_trips(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    student = _perturb(Thumbnailed(model, create_downsampler("residual", 2))).eval()
    save_pretrained(
        student, tmp_path, timm_model="test_efficientnet", model_kwargs={"num_classes": 7}
    )
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded, Thumbnailed)
    images = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(loaded(images), student(images))


def test_a_factory_student_round_trips_with_its_model_kwargs_and_restore(tmp_path):
    student = _perturb(Thumbnailed(_factory_model(4), create_downsampler("thumbdet", 4))).eval()
    save_pretrained(student, tmp_path, model_kwargs={"out_channels": 4})
    restore = lambda output, _, size: learnthumb.upsample_to(output, size)  # noqa: E731
    loaded = from_pretrained(tmp_path, model_factory=_factory_model, restore=restore)
    images = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        expected = learnthumb.upsample_to(student(images), (32, 40))
        assert torch.equal(loaded(images), expected)
    with pytest.raises(ValueError, match="pass model_factory="):
        from_pretrained(tmp_path)


class _MaskedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, _images, padding_mask=None):
        return padding_mask


def test_a_student_keeps_its_mask_argument(tmp_path):
    student = Thumbnailed(
        _MaskedModel(), create_downsampler("thumbdet", 4), mask_argument="padding_mask"
    )
    save_pretrained(student, tmp_path)
    assert load_pretrained_config(tmp_path)["model"]["mask_argument"] == "padding_mask"
    loaded = from_pretrained(tmp_path, model_factory=_MaskedModel)
    assert loaded.mask_argument == "padding_mask"
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, :, 16:] = True
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded(images, padding_mask=mask), student(images, padding_mask=mask))
    # A folder written before mask_argument was recorded loads with None.
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    del config["model"]["mask_argument"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    assert from_pretrained(tmp_path, model_factory=_MaskedModel).mask_argument is None
    config["model"]["mask_argument"] = 3
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model.mask_argument"):
        from_pretrained(tmp_path, model_factory=_MaskedModel)


def test_the_config_records_what_rebuilds_the_module_and_the_extras(tmp_path):
    down = create_downsampler("five_layer", 4, kernel_size=(5, 3, 3, 1, 1))
    save_pretrained(down, tmp_path, category_names=["cat", "dog"])
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["library_version"] == learnthumb.__version__
    assert config["kind"] == "downsampler"
    assert config["downsampler"] == {
        "name": "five_layer",
        "scale": 4,
        "kwargs": {"kernel_size": [5, 3, 3, 1, 1]},
    }
    assert load_pretrained_config(tmp_path)["extra"] == {"category_names": ["cat", "dog"]}
    assert sorted(path.name for path in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_saving_again_replaces_the_files(tmp_path):
    save_pretrained(_downsampler("thumbdet"), tmp_path)
    second = _perturb(create_downsampler("thumbdet", 2, hidden_channels=8), seed=1).eval()
    save_pretrained(second, tmp_path)
    images = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(from_pretrained(tmp_path)(images), second(images))


# ------------------------------------------------------------------------------- the Hub path
def test_a_repo_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    down = _downsampler("thumbdet")
    save_pretrained(down, tmp_path)
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(tmp_path)

    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    loaded = from_pretrained("someone/thumbnails", revision="v1")
    assert calls == [("someone/thumbnails", "v1", (CONFIG_NAME, WEIGHTS_NAME))]
    images = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(images), down(images))


def test_a_repo_id_without_huggingface_hub_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"needs huggingface_hub \(pip install huggingface_hub\)"):
        from_pretrained("someone/thumbnails")


# ---------------------------------------------------------------------------------- bad input
@pytest.fixture
def saved(tmp_path):
    save_pretrained(_downsampler("thumbdet"), tmp_path)
    return tmp_path


def _edit_config(folder, **changes):
    config = json.loads((folder / CONFIG_NAME).read_text())
    config.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(config))


def test_missing_folder_and_missing_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder at"):
        from_pretrained(tmp_path / "nowhere")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_NAME} is missing"):
        from_pretrained(saved)
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"{CONFIG_NAME} is missing"):
        from_pretrained(saved)
    with pytest.raises(ValueError, match="must be a folder, got the file"):
        from_pretrained(__file__)


def test_unknown_format_version(saved):
    _edit_config(saved, format_version=99)
    with pytest.raises(ValueError, match="has format_version 99; this learnthumb reads"):
        from_pretrained(saved)


def test_not_a_learnthumb_config_and_invalid_json(saved):
    _edit_config(saved, format="something else")
    with pytest.raises(ValueError, match="is not a learnthumb config"):
        from_pretrained(saved)
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        from_pretrained(saved)


def test_unknown_downsampler_name(saved):
    _edit_config(saved, downsampler={"name": "no_such_thing", "scale": 2, "kwargs": {}})
    with pytest.raises(ValueError, match="unknown downsampler 'no_such_thing'"):
        from_pretrained(saved)


def test_missing_and_unexpected_tensors(saved):
    state = load_file(str(saved / WEIGHTS_NAME))
    removed = state.pop("convs.0.bias")
    save_file(state, str(saved / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=r"does not match .*: missing convs\.0\.bias$"):
        from_pretrained(saved)
    state["convs.0.bias"] = removed
    state["convs.9.weight"] = torch.zeros(1)
    save_file(state, str(saved / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=r"unexpected convs\.9\.weight$"):
        from_pretrained(saved)


def test_shape_mismatch(saved):
    _edit_config(saved, downsampler={"name": "thumbdet", "scale": 2, "kwargs": {}})
    with pytest.raises(ValueError, match=r"wrong shape \(saved vs built\): convs\.0\.weight"):
        from_pretrained(saved)


def test_unreadable_weights(saved):
    (saved / WEIGHTS_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=f"{WEIGHTS_NAME} in .* is unreadable"):
        from_pretrained(saved)


def test_save_refuses_what_it_cannot_rebuild(tmp_path):
    with pytest.raises(TypeError, match="module must be an nn.Module, got str"):
        save_pretrained("thumbdet", tmp_path)
    with pytest.raises(ValueError, match="no learnthumb_config .* learnthumb.create_downsampler"):
        save_pretrained(learnthumb.ConvDownsampler(4), tmp_path)
    with pytest.raises(ValueError, match="module.downsampler has no learnthumb_config"):
        save_pretrained(Thumbnailed(_factory_model(), nn.AvgPool2d(4)), tmp_path)
    with pytest.raises(ValueError, match="apply to a Thumbnailed student only"):
        save_pretrained(create_downsampler("thumbdet"), tmp_path, timm_model="resnet18")
    with pytest.raises(TypeError, match="extra_config must be JSON-serialisable"):
        save_pretrained(create_downsampler("thumbdet"), tmp_path, tensor=torch.zeros(1))
    with pytest.raises(TypeError, match="model_factory must be callable"):
        from_pretrained(tmp_path, model_factory="resnet18")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- atomic saves
def test_a_failed_save_leaves_an_existing_folder_intact(saved, monkeypatch):
    before = {path.name: path.read_bytes() for path in saved.iterdir()}

    def failing_writer(_state, path):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("learnthumb.pretrained._write_safetensors", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(_downsampler("residual"), saved, note="new")
    assert {path.name: path.read_bytes() for path in saved.iterdir()} == before
    assert load_pretrained_config(saved)["downsampler"]["name"] == "thumbdet"


def test_a_failed_save_into_a_new_folder_leaves_nothing(tmp_path, monkeypatch):
    def failing_writer(_state, _path):
        raise OSError("disk full")

    monkeypatch.setattr("learnthumb.pretrained._write_safetensors", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(_downsampler("thumbdet"), tmp_path / "new" / "folder")
    assert not (tmp_path / "new" / "folder").exists()
