"""Backend-neutral job specs: one `experiments.main` run per rate point, with its flags, env and resources.

`build_jobs` is pure (no cluster, no xmanager, no submitit): the backends in `launch/backends/` only
translate these specs into subprocesses, xmanager jobs or submitit jobs, which keeps the part that
decides what runs where testable on any machine.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from launch.points import Point, override_flags, point_name

ACCELERATORS = ("cpu", "gpu", "tpu")
MAIN_MODULE = "experiments.main"
RESULT_FILE = "result.json"
LOG_FILE = "log.txt"
# JAX platforms per accelerator: name the accelerator so a job without one fails instead of silently
# running on CPU; keep cpu for host-side work.
JAX_PLATFORMS = {"gpu": "cuda,cpu", "tpu": "tpu,cpu"}


@dataclasses.dataclass
class Resources:
    """What one rate point asks for. None leaves a value to the cluster's default."""

    accelerator: str = "cpu"  # cpu | gpu | tpu
    accelerator_count: int = 0  # per job: GPUs on its node, or TPU chips
    accelerator_type: str | None = None  # e.g. A100, H100 (GPU) or v4, v5e (TPU)
    cpus: int | None = None  # CPU cores per job
    memory_gb: float | None = None
    time_minutes: int | None = None
    partition: str | None = None  # slurm partition

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator must be one of {ACCELERATORS}, not {self.accelerator!r}")
        if self.accelerator == "cpu":
            if self.accelerator_count:
                raise ValueError("accelerator_count needs --accelerator=gpu or tpu")
        elif self.accelerator_count < 1:
            self.accelerator_count = 1
        if self.cpus is not None and self.cpus < 1:
            raise ValueError(f"cpus must be >= 1, not {self.cpus}")


@dataclasses.dataclass
class JobSpec:
    """One run of `python -m {module} {args}` in `workdir` with `env` added to the environment."""

    name: str  # the point's directory name, also the job's name
    point: Point
    workdir: str
    args: list[str]
    env: dict[str, str]
    resources: Resources
    module: str = MAIN_MODULE
    python: str = sys.executable

    @property
    def command(self) -> list[str]:
        return [self.python, "-m", self.module, *self.args]

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, LOG_FILE)


def thread_env(threads: int | None, accelerator: str = "cpu") -> dict[str, str]:
    """Env that keeps a job to `threads` CPU threads (BLAS, OpenMP; XLA's CPU backend when single-threaded)."""
    env: dict[str, str] = {}
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
        if threads == 1 and accelerator == "cpu":
            # (a bare `intra_op_parallelism_threads=1` here, as often copied, makes XLA drop every flag after it)
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    return env


def job_env(resources: Resources, threads: int | None = None) -> dict[str, str]:
    """The environment a job adds: unbuffered output, thread limits, and the JAX platform it must use."""
    env = {"PYTHONUNBUFFERED": "1", **thread_env(threads if threads else resources.cpus, resources.accelerator)}
    if resources.accelerator in JAX_PLATFORMS:
        env["JAX_PLATFORMS"] = JAX_PLATFORMS[resources.accelerator]
    return env


def job_args(config: str, workdir: str, point: Point, common: Mapping[str, Any] | None = None) -> list[str]:
    """Flags of `experiments.main` for one point; the point wins over a common override of the same key."""
    overrides = {**(common or {}), **point}
    return [f"--config={config}", f"--workdir={workdir}", *override_flags(overrides)]


def build_jobs(points: Sequence[Point], *, config: str, root: str, resources: Resources | None = None,
               common_overrides: Mapping[str, Any] | None = None, threads_per_job: int | None = None,
               module: str = MAIN_MODULE, python: str = sys.executable,
               extra_env: Mapping[str, str] | None = None) -> list[JobSpec]:
    """One JobSpec per point, in `root/<point name>`.

    config: the config file as experiments.main takes it (`path.py` or `path.py:ARG`).
    common_overrides: dotted keys set on every point (e.g. {'num_steps': 10}); not part of the names.
    threads_per_job: CPU threads per job (default: resources.cpus, else no limit).
    """
    resources = resources or Resources()
    jobs, seen = [], {}
    for point in points:
        name = point_name(point)
        if name in seen:
            raise ValueError(f"sweep points {seen[name]} and {point} share the directory name {name!r}")
        seen[name] = point
        workdir = os.path.join(root, name)
        env = {**job_env(resources, threads_per_job), **(extra_env or {})}
        jobs.append(JobSpec(name=name, point=dict(point), workdir=workdir,
                            args=job_args(config, workdir, point, common_overrides), env=env,
                            resources=resources, module=module, python=python))
    return jobs


def is_finished(workdir: str) -> bool:
    """A point is finished when its workdir holds result.json (experiments.main writes it last)."""
    return "://" not in workdir and os.path.exists(os.path.join(workdir, RESULT_FILE))
