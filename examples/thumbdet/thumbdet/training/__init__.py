"""Training: the configuration (:mod:`.config`), the training modes (:mod:`.modes`), the
epoch loop (:mod:`.engine`), the run (:mod:`.trainer`), the detection loss
(:mod:`.criterion`, :mod:`.matcher`), the run's data (:mod:`.data`), resuming (:mod:`.resume`),
seeding and Ctrl-C (:mod:`.signals`) and the output folder's lock (:mod:`.output_lock`); the
process group is :mod:`thumbdet.distributed`, shared with evaluation. Submodules are imported
on demand: the CLI reads the configuration without importing torch.
"""
