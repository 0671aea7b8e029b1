"""Training: the configuration (:mod:`.config`), the training modes (:mod:`.modes`), the
epoch loop (:mod:`.engine`), the run (:mod:`.trainer`), the detection loss
(:mod:`.criterion`, :mod:`.matcher`) and the multi-process plumbing (:mod:`.distributed`,
:mod:`.output_lock`). Submodules are imported on demand: the CLI reads the configuration
without importing torch.
"""
