"""Launching rate sweeps of `experiments.main` and reporting their results.

`python -m launch.sweep` runs every rate point a config's `sweep(add)` lists, locally or on a cluster
(xmanager, slurm); `python -m launch.report` turns the finished workdirs into a rate-fidelity plot,
tables and an ablation table. See docs/sweeps.md.
"""
