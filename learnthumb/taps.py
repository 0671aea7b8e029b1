"""Capture intermediate outputs of any ``nn.Module`` by submodule name."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["FeatureTap"]


class FeatureTap:
    """Record the outputs of named submodules with forward hooks.

    Works with any module tree (timm, torchvision, custom): names are those of
    ``model.named_modules()``. After each forward of ``model``, :attr:`features` maps every
    name to that submodule's latest output, in the order the names were given. Remove the hooks
    with :meth:`remove`, or use the tap as a context manager.

    Args:
        model: the module to tap.
        names: submodule names, e.g. ``["layer2", "layer3", "layer4"]`` for a timm ResNet.

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet18", num_classes=0)
        >>> with FeatureTap(model, ["layer3", "layer4"]) as tap:
        ...     _ = model(torch.rand(1, 3, 64, 64))
        ...     [tuple(f.shape) for f in tap.values()]
        [(1, 256, 4, 4), (1, 512, 2, 2)]
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(names, str):
            raise TypeError(f"names must be a sequence of names, got the string {names!r}")
        names = list(names)
        if not names:
            raise ValueError("names must name at least one submodule, got none")
        if len(set(names)) != len(names):
            raise ValueError(f"names must be distinct, got {names}")
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                close = difflib.get_close_matches(name, list(modules), n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise ValueError(f"model has no submodule named {name!r}{hint}")
        self.names = names
        self.features: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(self._recorder(name)) for name in names
        ]

    def _recorder(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple[Any, ...], output: Any) -> None:
            self.features[name] = output

        return hook

    def __getitem__(self, name: str) -> Any:
        if name not in self.features:
            raise KeyError(f"no output recorded for {name!r}: run the model first")
        return self.features[name]

    def values(self) -> list[Any]:
        """Recorded outputs in the order of :attr:`names`."""
        missing = [name for name in self.names if name not in self.features]
        if missing:
            raise RuntimeError(f"no output recorded for {missing}: run the model first")
        return [self.features[name] for name in self.names]

    def clear(self) -> None:
        """Forget recorded outputs (their memory is released)."""
        self.features.clear()

    def remove(self) -> None:
        """Remove every hook and forget recorded outputs; the tap is inert afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()
