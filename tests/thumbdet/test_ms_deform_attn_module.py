"""MSDeformAttn: shapes, equivalence with ms_deform_attn, padding mask, initialisation, errors."""

from __future__ import annotations

import pytest
import torch

from thumbdet.ops import MSDeformAttn, ms_deform_attn

LEVEL_SHAPES = [(6, 5), (3, 3)]


def make_memory(batch: int = 2, d_model: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(LEVEL_SHAPES)
    areas = spatial_shapes.prod(-1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    memory = torch.randn(batch, int(areas.sum()), d_model, generator=generator)
    return memory, spatial_shapes, level_start_index


def make_attention(**overrides) -> MSDeformAttn:
    torch.manual_seed(0)
    options = {"d_model": 16, "n_levels": 2, "n_heads": 4, "n_points": 3, "backend": "pytorch"}
    attention = MSDeformAttn(**{**options, **overrides})
    with torch.no_grad():  # move away from the zero init so every path matters
        for parameter in attention.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return attention


@pytest.mark.parametrize("box_size", [2, 4])
def test_output_shape(box_size):
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    query = torch.randn(2, 7, 16)
    reference_points = torch.rand(2, 7, 2, box_size)
    output = attention(query, reference_points, memory, spatial_shapes, level_start_index)
    assert output.shape == (2, 7, 16)


def test_module_equals_function():
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    query = torch.randn(2, 7, 16)
    reference_points = torch.rand(2, 7, 2, 2)
    output = attention(query, reference_points, memory, spatial_shapes, level_start_index)

    value = attention.value_proj(memory).view(2, -1, 4, 4)  # (N, S, M, D)
    offsets = attention.sampling_offsets(query).view(2, 7, 4, 2, 3, 2)
    weights = attention.attention_weights(query).view(2, 7, 4, 6).softmax(-1).view(2, 7, 4, 2, 3)
    size_xy = torch.tensor([[5.0, 6.0], [3.0, 3.0]])  # (W, H) per level
    locations = reference_points[:, :, None, :, None, :] + offsets / size_xy[:, None, :]
    expected = attention.output_proj(
        ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
    )
    torch.testing.assert_close(output, expected)


def test_padding_mask_zeroes_padded_values():
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    query = torch.randn(2, 7, 16)
    reference_points = torch.rand(2, 7, 2, 2)
    padding_mask = torch.zeros(2, memory.shape[1], dtype=torch.bool)
    padding_mask[0, 10:30] = True
    padding_mask[1, 35:] = True
    output = attention(
        query, reference_points, memory, spatial_shapes, level_start_index, padding_mask
    )
    # Whatever sits at padded positions must not matter ...
    scrambled = memory.masked_fill(padding_mask[..., None], 1e3)
    output_scrambled = attention(
        query, reference_points, scrambled, spatial_shapes, level_start_index, padding_mask
    )
    torch.testing.assert_close(output, output_scrambled)
    # ... while without the mask it does.
    unmasked = attention(query, reference_points, scrambled, spatial_shapes, level_start_index)
    assert not torch.allclose(unmasked, output, atol=1e-3)


def test_initialisation_follows_deformable_detr():
    attention = MSDeformAttn(d_model=32, n_levels=2, n_heads=8, n_points=3)
    assert torch.count_nonzero(attention.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attention.attention_weights.weight) == 0
    assert torch.count_nonzero(attention.attention_weights.bias) == 0
    offsets = attention.sampling_offsets.bias.view(8, 2, 3, 2)  # (M, L, P, 2)
    ring = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]],
        dtype=torch.float32,
    )
    for point in range(3):
        for level in range(2):
            torch.testing.assert_close(offsets[:, level, point], ring * (point + 1))
    for projection in (attention.value_proj, attention.output_proj):
        assert torch.count_nonzero(projection.bias) == 0
        bound = (6 / (2 * 32)) ** 0.5  # xavier uniform
        assert projection.weight.abs().max() <= bound


def test_all_parameters_receive_gradients():
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    query = torch.randn(2, 7, 16)
    reference_points = torch.rand(2, 7, 2, 4)
    attention(query, reference_points, memory, spatial_shapes, level_start_index).sum().backward()
    for name, parameter in attention.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_runs_under_autocast():
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    query = torch.randn(2, 7, 16)
    reference_points = torch.rand(2, 7, 2, 2)
    expected = attention(query, reference_points, memory, spatial_shapes, level_start_index)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = attention(query, reference_points, memory, spatial_shapes, level_start_index)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, atol=0.1, rtol=0.05)


def test_compiled_backend_matches_pytorch_in_module():
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    query = torch.randn(2, 7, 16)
    reference_points = torch.rand(2, 7, 2, 2)
    expected = attention(query, reference_points, memory, spatial_shapes, level_start_index)
    attention.backend = "auto"  # the C++ kernel when built, else the PyTorch path again
    actual = attention(query, reference_points, memory, spatial_shapes, level_start_index)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("query_shape", "reference_shape", "memory_shape", "mask_shape", "name"),
    [
        ((2, 7, 15), (2, 7, 2, 2), (2, 38, 16), None, "query"),
        ((2, 7, 16), (2, 7, 3, 2), (2, 38, 16), None, "reference_points"),
        ((2, 7, 16), (2, 7, 2, 3), (2, 38, 16), None, "reference_points"),
        ((2, 7, 16), (2, 7, 2, 2), (1, 38, 16), None, "input_flatten"),
        ((2, 7, 16), (2, 7, 2, 2), (2, 38, 16), (2, 37), "input_padding_mask"),
    ],
)
def test_bad_shapes_raise(query_shape, reference_shape, memory_shape, mask_shape, name):
    attention = make_attention()
    _, spatial_shapes, level_start_index = make_memory()
    mask = None if mask_shape is None else torch.zeros(mask_shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=name):
        attention(
            torch.randn(query_shape),
            torch.rand(reference_shape),
            torch.randn(memory_shape),
            spatial_shapes,
            level_start_index,
            mask,
        )


def test_non_boolean_mask_and_bad_heads_raise():
    attention = make_attention()
    memory, spatial_shapes, level_start_index = make_memory()
    with pytest.raises(TypeError, match="input_padding_mask"):
        attention(
            torch.randn(2, 7, 16),
            torch.rand(2, 7, 2, 2),
            memory,
            spatial_shapes,
            level_start_index,
            torch.zeros(2, memory.shape[1]),
        )
    with pytest.raises(ValueError, match="n_heads"):
        MSDeformAttn(d_model=30, n_heads=8)
