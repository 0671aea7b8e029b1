"""Key renaming behind :mod:`thumbdet.checkpoints.convert`: rule tables and a mapper that
names every misfit.

A rule is ``(pattern, replacement)``: a source key that fully matches ``pattern`` becomes
``match.expand(replacement)``; the first matching rule wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch

from thumbdet.models import DeformableDETR, DetectorConfig

__all__ = ["OFFICIAL_RULES", "TRANSFORMERS_RULES", "expected_keys", "map_keys", "tied_head"]

Rules = Sequence[tuple[str, str]]

#: fundamentalvision/Deformable-DETR -> thumbdet.
OFFICIAL_RULES: Rules = (
    (r"backbone\.0\.body\.(.+)", r"backbone.body.\1"),
    (r"transformer\.encoder\.layers\.(\d+)\.norm1\.(.+)", r"transformer.encoder.layers.\1.norm.\2"),
    (r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(linear[12])\.(.+)",
     r"transformer.\1.layers.\2.ffn.\3.\4"),
    (r"transformer\.encoder\.layers\.(\d+)\.norm2\.(.+)",
     r"transformer.encoder.layers.\1.ffn.norm.\2"),
    # The official decoder layer numbers its norms by position: cross, self, feed-forward.
    (r"transformer\.decoder\.layers\.(\d+)\.norm1\.(.+)",
     r"transformer.decoder.layers.\1.norm_cross.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm2\.(.+)",
     r"transformer.decoder.layers.\1.norm_self.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm3\.(.+)",
     r"transformer.decoder.layers.\1.ffn.norm.\2"),
    # Box refinement / two-stage hand the heads to the decoder too: the same tensors again.
    (r"transformer\.decoder\.((?:class|bbox)_embed\.\d+\..+)", r"\1"),
    (r"(transformer\.encoder\.layers\.\d+\.self_attn\..+)", r"\1"),
    (r"(transformer\.decoder\.layers\.\d+\.(?:self|cross)_attn\..+)", r"\1"),
    (r"(transformer\.level_embed)", r"\1"),
    (r"(transformer\.(?:reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)"
     r"\.(?:weight|bias))", r"\1"),
    (r"((?:input_proj|class_embed|bbox_embed)\..+|query_embed\.weight)", r"\1"),
)  # fmt: skip

#: transformers' DeformableDetrForObjectDetection (key names of versions 4 and 5) -> thumbdet.
TRANSFORMERS_RULES: Rules = (
    # transformers 4 saved the timm backbone under ``conv_encoder``; 5 drops that level.
    (r"model\.backbone\.(?:conv_encoder\.)?model\.(.+)", r"backbone.body.\1"),
    (r"model\.input_proj\.(.+)", r"input_proj.\1"),
    (r"model\.query_position_embeddings\.weight", r"query_embed.weight"),
    (r"model\.level_embed", r"transformer.level_embed"),
    (r"model\.((?:reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)"
     r"\.(?:weight|bias))", r"transformer.\1"),
    (r"model\.encoder\.layers\.(\d+)\.self_attn\.(\w+\.(?:weight|bias))",
     r"transformer.encoder.layers.\1.self_attn.\2"),
    (r"model\.encoder\.layers\.(\d+)\.self_attn_layer_norm\.(.+)",
     r"transformer.encoder.layers.\1.norm.\2"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.(\w+\.(?:weight|bias))",
     r"transformer.decoder.layers.\1.cross_attn.\2"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.(.+)",
     r"transformer.decoder.layers.\1.norm_cross.\2"),
    (r"model\.decoder\.layers\.(\d+)\.self_attn\.(?:out_proj|o_proj)\.(.+)",
     r"transformer.decoder.layers.\1.self_attn.out_proj.\2"),
    (r"model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.(.+)",
     r"transformer.decoder.layers.\1.norm_self.\2"),
    # transformers 4 names the feed-forward ``fc1``/``fc2``, 5 ``mlp.fc1``/``mlp.fc2``.
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.(?:mlp\.)?fc([12])\.(.+)",
     r"transformer.\1.layers.\2.ffn.linear\3.\4"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.final_layer_norm\.(.+)",
     r"transformer.\1.layers.\2.ffn.norm.\3"),
    (r"(?:model\.decoder\.)?((?:class|bbox)_embed\.\d+\..+)", r"\1"),
)  # fmt: skip

# transformers' decoder self-attention has q/k/v projections; nn.MultiheadAttention stacks
# them, in this order, in one in_proj matrix.
_QKV_PATTERN = re.compile(r"model\.decoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
_QKV_ORDER = "qkv"

# Counters of a training-mode BatchNorm; frozen batch-norm has none (they are not weights).
_IGNORED_PATTERN = re.compile(r".*\.num_batches_tracked")

#: At most this many keys are named per list in an error.
_MAX_LISTED = 40


def _rename(key: str, rules: Rules) -> str | None:
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(replacement)
    return None


def _listed(keys: Sequence[str]) -> str:
    """``"3 (a, b, c)"``, at most :data:`_MAX_LISTED` keys named."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)} ({shown}{more})"


def expected_keys(config: DetectorConfig) -> dict[str, torch.Size]:
    """Keys and shapes of the detector of ``config``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = DeformableDETR(config)
    return {key: value.shape for key, value in model.state_dict().items()}


def tied_head(target: str) -> str | None:
    """Head 0's key for head ``i > 0``: transformers ties unrefined heads and saves head 0."""
    match = re.fullmatch(r"(class_embed|bbox_embed)\.(\d+)\.(.+)", target)
    if match is None or match.group(2) == "0":
        return None
    return f"{match.group(1)}.0.{match.group(3)}"


def map_keys(
    source: Mapping[str, torch.Tensor],
    rules: Rules,
    expected: Mapping[str, torch.Size],
    merge_qkv: bool = False,
    fallback: Callable[[str], str | None] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename ``source`` to the keys of ``expected``.

    Args:
        source: The source state dict.
        rules: Rename rules; a key no rule matches is unexpected.
        expected: thumbdet keys and shapes (:func:`expected_keys`).
        merge_qkv: Stack transformers' decoder q/k/v projections into ``in_proj``.
        fallback: For a missing thumbdet key, another thumbdet key whose tensor stands in.

    Returns:
        The renamed state dict (copies, in ``expected``'s order) and the problems: one phrase
        per kind (unexpected, missing, other shape, repeated with other values), each listing
        its keys; empty when every key fits.
    """
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unmapped, conflicting = [], []
    qkv: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for key, tensor in source.items():
        if _IGNORED_PATTERN.fullmatch(key):
            continue
        match = _QKV_PATTERN.fullmatch(key) if merge_qkv else None
        if match:
            layer, part, kind = match.groups()
            target = f"transformer.decoder.layers.{layer}.self_attn.in_proj_{kind}"
            qkv.setdefault(target, {})[part] = (key, tensor)
            continue
        target = _rename(key, rules)
        if target is None:
            unmapped.append(key)
        elif target in mapped and not torch.equal(mapped[target], tensor):
            conflicting.append(f"{key} vs {origin[target]}")
        else:
            mapped[target], origin[target] = tensor, key
    for target, parts in qkv.items():
        if all(part in parts for part in _QKV_ORDER):
            # (3C, C) weight or (3C,) bias, rows q then k then v
            mapped[target] = torch.cat([parts[part][1] for part in _QKV_ORDER], 0)
            origin[target] = parts["q"][0]
        else:  # an incomplete triple cannot be stacked: its parts are left over
            unmapped.extend(key for key, _ in parts.values())
    if fallback is not None:
        for target in expected:
            stand_in = fallback(target)
            if target not in mapped and stand_in in mapped:
                mapped[target], origin[target] = mapped[stand_in], origin[stand_in]
    unexpected = unmapped + [origin[key] for key in mapped if key not in expected]
    missing = [key for key in expected if key not in mapped]
    wrong_shape = [
        f"{origin[key]} {tuple(mapped[key].shape)} vs {key} {tuple(expected[key])}"
        for key in expected
        if key in mapped and mapped[key].shape != expected[key]
    ]
    problems = []
    if unexpected:
        problems.append(f"source keys with no place in thumbdet's model: {_listed(unexpected)}")
    if missing:
        problems.append(f"keys of thumbdet's model missing from the source: {_listed(missing)}")
    if wrong_shape:
        problems.append(f"shapes that differ (source vs thumbdet): {_listed(wrong_shape)}")
    if conflicting:
        problems.append(f"keys that repeat another with other values: {_listed(conflicting)}")
    state_dict = {key: mapped[key].detach().clone() for key in expected if key in mapped}
    return state_dict, problems
