"""Child process of :func:`benchmarks._harness.peak_rss_in_subprocess` (reads JSON on stdin).

Prints one JSON line: the resident memory before the measured call, the peak during it, and
how the peak was read. Linux's ``VmHWM`` high-water mark is reset (``/proc/self/clear_refs``)
after the model is built, so building it does not count as the call's peak; where the reset is
not possible the lifetime peak (``ru_maxrss``) is reported and ``method`` says so.
"""

from __future__ import annotations

import gc
import importlib
import json
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # "5": reset the peak RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def main() -> None:
    request = json.loads(sys.stdin.read())
    torch.set_num_threads(int(request["threads"]))
    module_name, function_name = request["builder"].split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    call = builder(**request["arguments"])
    gc.collect()
    baseline_kib = _status_kib("VmRSS")
    reset = _reset_high_water_mark()
    call()
    if reset and _status_kib("VmHWM") is not None:
        peak_kib, method = _status_kib("VmHWM"), "VmHWM reset after building"
    else:
        peak_kib, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    baseline_kib = baseline_kib if baseline_kib is not None else 0
    print(
        json.dumps(
            {
                "peak_rss_bytes": peak_kib * 1024,
                "baseline_rss_bytes": baseline_kib * 1024,
                "call_rss_bytes": max(0, peak_kib - baseline_kib) * 1024,
                "method": method,
            }
        )
    )


if __name__ == "__main__":
    main()
