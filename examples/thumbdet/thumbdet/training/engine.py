"""One training epoch of a training mode's step module (the evaluation pass is
:mod:`thumbdet.evaluation.loop`)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from thumbdet.distributed import reduce_mean, unwrap, world_size
from thumbdet.training.criterion import weighted_loss

__all__ = [
    "check_model_outputs_finite",
    "targets_to_device",
    "train_one_epoch",
]

Batch = tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]
_TARGET_TENSORS = ("boxes", "labels")
_OUTPUT_TENSORS = ("pred_logits", "pred_boxes")
#: What a non-finite loss, gradient, parameter or output usually means.
LIKELY_CAUSE = "likely cause: learning rate too high or a non-finite input"


def targets_to_device(targets: Sequence[dict[str, Any]], device: torch.device) -> list[dict]:
    """Move the tensors the criterion reads (``boxes``, ``labels``) to ``device``."""
    return [
        {key: value.to(device) if key in _TARGET_TENSORS else value for key, value in t.items()}
        for t in targets
    ]


def _output_tensors(outputs: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """``pred_logits``/``pred_boxes`` of the final and auxiliary decoder layers, by name."""
    if outputs is None:
        return {}
    named = {key: outputs[key] for key in _OUTPUT_TENSORS if key in outputs}
    for layer, aux in enumerate(outputs.get("aux_outputs") or []):
        named.update({f"aux_outputs[{layer}].{key}": aux[key] for key in _OUTPUT_TENSORS})
    return named


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity (one device sync for all)."""
    if not tensors:
        return []
    # max |x| cannot overflow, unlike a 2-norm: it is finite exactly when every entry is.
    values = [t.detach() for t in tensors.values()]
    peaks = torch.stack([peak.float() for peak in torch._foreach_norm(values, math.inf)])
    flags = torch.isfinite(peaks).tolist()
    return [name for name, finite in zip(tensors, flags, strict=True) if not finite]


_NOT_SAVED = "stopped before saving (a previous checkpoint is left as it was)"


def _some(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _stop(what: str, epoch: int, step: int, detail: str) -> FloatingPointError:
    return FloatingPointError(
        f"non-finite {what} at epoch {epoch}, iteration {step}: {detail}; {LIKELY_CAUSE}; "
        f"{_NOT_SAVED}"
    )


def _format_terms(total: float, losses: dict[str, torch.Tensor]) -> str:
    terms = {"loss": total, **{name: float(value.detach()) for name, value in losses.items()}}
    return ", ".join(f"{name}={value:.4g}" for name, value in terms.items())


def _parameter_names(step: nn.Module, parameters: Sequence[nn.Parameter]) -> list[str]:
    # Named inside the module the step wraps (the detector, the distillation), as users know it.
    module = unwrap(step)
    children = list(module.children())
    module = children[0] if len(children) == 1 else module
    names = {id(p): name for name, p in module.named_parameters()}
    return [names.get(id(p), f"param_groups parameter {i}") for i, p in enumerate(parameters)]


@torch.no_grad()
def check_model_outputs_finite(model: nn.Module, device: torch.device, epoch: int) -> None:
    """Refuse a model whose outputs on a fixed probe image hold a NaN or an infinity.

    A step can leave weights that are finite but so large (e.g. ``lr=1e30``) that every output
    overflows; the training loop only sees that at the next step. Run before saving a
    checkpoint, this keeps such a model out of it. The probe is a deterministic 128 x 128
    colour gradient, so no random number generator is touched; train/eval modes are restored.

    Args:
        model: ``model(images, padding_mask) -> outputs`` taking full-size images, e.g.
            ``TrainingParts.inference``.
        device: Device of the model.
        epoch: The epoch just trained, for the message.

    Raises:
        FloatingPointError: One line naming the epoch, the non-finite outputs and the likely
            cause.
    """
    model = unwrap(model)
    modes = {module: module.training for module in model.modules()}
    ramp = torch.linspace(0.0, 1.0, 128, device=device)
    red, green = ramp[None, :].expand(128, 128), ramp[:, None].expand(128, 128)  # (128, 128)
    probe = torch.stack([red, green, 1.0 - red])[None]  # (1, 3, 128, 128)
    mask = torch.zeros(1, 128, 128, dtype=torch.bool, device=device)
    try:
        model.eval()
        bad = _non_finite(_output_tensors(model(probe, mask)))
    finally:
        for module, training in modes.items():
            module.training = training
    if bad:
        raise FloatingPointError(
            f"non-finite model outputs after epoch {epoch} ({_some(bad)} on a probe image); "
            f"{LIKELY_CAUSE}; {_NOT_SAVED}"
        )


def train_one_epoch(
    step: nn.Module,
    criterion: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, torch.Tensor]],
    data_loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    epoch: int,
    clip_max_norm: float = 0.1,
    frozen_parameters: Sequence[nn.Parameter] = (),
    max_steps: int = 0,
    show_progress: bool = True,
) -> dict[str, float]:
    """Train for one epoch and return the epoch's mean losses (averaged over processes).

    ``step(images, padding_mask, epoch) -> (outputs, losses)`` is a training mode's step
    module (:class:`thumbdet.training.modes.TrainingParts`), possibly inside
    ``DistributedDataParallel``. The total loss is the criterion's weighted detection loss of
    ``outputs`` (skipped when they are ``None``, as in ThumbDet's stage one) plus the mode's
    own weighted ``losses``.

    Args:
        step: The mode's step module (see above).
        criterion: ``criterion(outputs, targets) -> losses`` with a ``weight_dict``.
        data_loader: Yields ``(images, padding_mask, targets)``.
        optimizer: The optimiser.
        device: Device of the model.
        epoch: Epoch index, counting from 0 (selects ThumbDet's stage).
        clip_max_norm: Gradient clipping max norm (0 disables).
        frozen_parameters: Parameters whose gradients are dropped before each step, so the
            optimiser leaves them as they are (e.g. the downsampler in stage two of Table 5).
        max_steps: Stop after this many steps (0: the whole loader).
        show_progress: Show a tqdm bar with the loss and images/s.

    Returns:
        Mean of ``loss`` (the optimised total), each unweighted detection loss of the last
        decoder layer, each weighted loss of the mode, plus ``lr`` and ``images_per_s``
        (training throughput of all processes together).

    Raises:
        FloatingPointError: At the first non-finite model output, loss, gradient or parameter,
            in one line naming the epoch, the iteration, the loss terms with their values and
            the likely cause. The loop stops before the caller can save a checkpoint.
    """
    step.train()
    sums: dict[str, float] = defaultdict(float)
    steps, images_seen = 0, 0
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    names = _parameter_names(step, trainable)
    total_steps = len(data_loader) if hasattr(data_loader, "__len__") else None
    if max_steps and total_steps is not None:
        total_steps = min(total_steps, max_steps)
    progress = tqdm(
        data_loader,
        total=total_steps,
        desc=f"epoch {epoch}",
        disable=not show_progress,
        leave=False,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    for host_images, host_mask, host_targets in progress:
        images = host_images.to(device, non_blocking=True)
        padding_mask = host_mask.to(device, non_blocking=True)
        targets = targets_to_device(host_targets, device)
        outputs, losses = step(images, padding_mask, epoch)
        total = sum(losses.values(), torch.zeros((), device=device))
        bad = _non_finite(_output_tensors(outputs))
        if bad:
            raise _stop("model outputs", epoch, steps, _some(bad))
        if outputs is not None:
            detection_losses = criterion(outputs, targets)
            total = total + weighted_loss(detection_losses, criterion.weight_dict)
            for name in ("loss_ce", "loss_bbox", "loss_giou"):
                if name in detection_losses:
                    losses[name] = detection_losses[name]
        loss_value = float(total.detach())
        if not math.isfinite(loss_value):
            raise _stop("loss", epoch, steps, _format_terms(loss_value, losses))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        for parameter in frozen_parameters:
            parameter.grad = None
        checked = {
            f"gradient of {name}": p.grad
            for name, p in zip(names, trainable, strict=True)
            if p.grad is not None
        }
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in trainable if p.grad is not None], clip_max_norm
            )
        optimizer.step()
        # Checked after the step, with one sync: a NaN gradient has made NaN weights by now,
        # but the loop stops before any checkpoint is written.
        checked.update(zip(names, trainable, strict=True))
        bad = _non_finite(checked)
        if bad:
            what = "gradient" if bad[0].startswith("gradient of ") else "parameter"
            raise _stop(what, epoch, steps, f"{_some(bad)}; {_format_terms(loss_value, losses)}")

        steps += 1
        images_seen += images.shape[0]
        sums["loss"] += loss_value
        for name, value in losses.items():
            sums[name] += float(value.detach())
        elapsed = max(time.perf_counter() - start, 1e-9)
        progress.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images_seen / elapsed:.1f}")
        if max_steps and steps >= max_steps:
            break
    progress.close()
    elapsed = max(time.perf_counter() - start, 1e-9)
    stats = {name: value / max(steps, 1) for name, value in sums.items()}
    stats["images_per_s"] = images_seen / elapsed
    stats = reduce_mean(stats, device)
    stats["images_per_s"] *= world_size()  # all processes together
    stats["lr"] = optimizer.param_groups[0]["lr"]
    return stats
