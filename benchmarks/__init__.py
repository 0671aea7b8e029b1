"""Benchmarks of learnthumb / ThumbDet: speed, MACs, memory and training cost -> JSON.

One script per question (``bench_inference``, ``bench_breakdown``, ``bench_training``,
``bench_fastpaths``), a shared harness (``_harness``), and ``python -m benchmarks.run`` to run
them all. Results go to ``benchmarks/results/<machine>/<name>.json``; see ``benchmarks/README.md``.
Run from the repository root (``benchmarks`` is a folder of scripts, not an installed package).
"""
