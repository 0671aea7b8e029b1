"""Build the compiled MSDA kernels ahead of time: ``python -m thumbdet.ops.build``.

By default builds the variant this machine would use (CUDA when a GPU and nvcc are present, else
the C++ CPU kernel) into the cache that ``thumbdet.ops`` loads from (``$THUMBDET_BUILD_DIR``,
default ``~/.cache/thumbdet``). ``--variant cuda`` builds the CUDA kernel without a GPU
(architectures from ``--cuda-archs`` or ``TORCH_CUDA_ARCH_LIST``, else 8.0;9.0).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ._build import build_extension, cuda_toolkit_usable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cuda-archs", default=None, help="e.g. '8.0;9.0' (CUDA variant only)")
    parser.add_argument("--optimization", default="-O3", help="compiler flag, e.g. -O2")
    parser.add_argument(
        "--build-dir", type=Path, default=None, help="build here instead of the cache folder"
    )
    parser.add_argument("--verbose", action="store_true", help="print compiler commands")
    args = parser.parse_args(argv)
    variant = args.variant
    if variant == "auto":
        variant = "cuda" if torch.cuda.is_available() and cuda_toolkit_usable() else "cpu"
    start = time.perf_counter()
    library = build_extension(
        variant,
        build_dir=args.build_dir,
        optimization=args.optimization,
        cuda_archs=args.cuda_archs,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    print(f"built the {variant} MSDA extension in {seconds:.1f} s: {library}")


if __name__ == "__main__":
    main()
