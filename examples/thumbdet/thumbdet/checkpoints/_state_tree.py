"""The JSON tree of a checkpoint's state: what :func:`~thumbdet.checkpoints.format.save_checkpoint`
stores in the safetensors metadata, with ``{"__tensor__": name}`` where a tensor was and
markers for the types JSON lacks (numpy arrays, tuples, dicts with non-string keys)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["StateEncoder", "decode_state"]

# Markers of the JSON tree: a dict with exactly one of these keys stands for another type.
_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_ITEMS = "__items__"  # a dict whose keys are not all strings (optimizer state: int keys)
_MARKERS = (_TENSOR, _NDARRAY, _TUPLE, _ITEMS)


class StateEncoder:
    """Turns a state into a JSON tree plus a flat ``{name: tensor}`` dict for safetensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[tuple[str, int]] = set()

    def encode(self, value: Any, where: tuple[str, ...]) -> Any:
        if isinstance(value, torch.Tensor):
            return {_TENSOR: self._add_tensor(value, where)}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(self._refusal(value, where))
            array = {"dtype": value.dtype.str, "shape": list(value.shape)}
            return {_NDARRAY: dict(array, data=value.reshape(-1).tolist())}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {_TUPLE: [self.encode(item, (*where, str(i))) for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(item, (*where, str(i))) for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            plain = all(isinstance(key, str) for key in value) and not (
                len(value) == 1 and next(iter(value)) in _MARKERS
            )
            if plain:
                return {key: self.encode(item, (*where, key)) for key, item in value.items()}
            return {
                _ITEMS: [
                    [self.encode(key, (*where, "key")), self.encode(item, (*where, str(key)))]
                    for key, item in value.items()
                ]
            }
        raise TypeError(self._refusal(value, where))

    @staticmethod
    def _refusal(value: Any, where: tuple[str, ...]) -> str:
        return (
            f"save_checkpoint: cannot store the {type(value).__name__} at state"
            f"[{']['.join(repr(part) for part in where)}]: expected tensors, numeric numpy "
            "arrays, dicts, lists, tuples, str, int, float, bool or None"
        )

    def _add_tensor(self, tensor: torch.Tensor, where: tuple[str, ...]) -> str:
        name = "/".join(where) or "tensor"
        unique, count = name, 1
        while unique in self.tensors:
            count += 1
            unique = f"{name}#{count}"
        tensor = tensor.detach().cpu().contiguous()
        # safetensors stores each tensor on its own: copy tied weights and views.
        storage = tensor.untyped_storage()
        key = (str(storage.device), storage.data_ptr())
        if key in self._storages or storage.nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        self._storages.add((str(tensor.device), tensor.untyped_storage().data_ptr()))
        self.tensors[unique] = tensor
        return unique


def decode_state(value: Any, tensor: Callable[[str], torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [decode_state(item, tensor) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        marker, content = next(iter(value.items()))
        if marker == _TENSOR:
            return tensor(content)
        if marker == _NDARRAY:
            dtype = np.dtype(content["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"numpy array of dtype {dtype}")
            return np.array(content["data"], dtype=dtype).reshape(content["shape"])
        if marker == _TUPLE:
            return tuple(decode_state(item, tensor) for item in content)
        if marker == _ITEMS:
            return {decode_state(key, tensor): decode_state(item, tensor) for key, item in content}
    return {key: decode_state(item, tensor) for key, item in value.items()}
