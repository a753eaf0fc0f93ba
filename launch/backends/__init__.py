"""Backends that run JobSpecs: `local` (subprocesses), `xmanager` (xm_local), `slurm` (submitit)."""
