"""Launches JobSpecs as one xmanager experiment with one job (work unit) per rate point.

    pip install xmanager      # the optional extra; xm_local needs no cluster for --xm_executor=local
    python -m launch.sweep --backend=xmanager --config=... --workdir=ROOT \
        --accelerator=gpu --accelerator_type=H100 --accelerator_count=1 [--xm_executor=vertex ...]

`xm_requirements` (pure) turns Resources into `xm.JobRequirements` keyword arguments; the rest only
builds xmanager objects. Executors: `local` runs `python -m experiments.main` on this machine as a
binary (no Docker); `vertex` and `kubernetes` package the repository as a Python container.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch.jobs import JobSpec, Resources

EXECUTORS = ("local", "vertex", "kubernetes")
REPO_ROOT = str(Path(__file__).resolve().parents[2])
DEFAULT_BASE_IMAGE = "python:3.11"
GIB = 2 ** 30


def import_xmanager() -> tuple[Any, Any]:
    """(xm, xm_local), or an ImportError saying how to install them."""
    try:
        from xmanager import xm, xm_local
    except ImportError as error:
        raise ImportError("the xmanager backend needs the `xmanager` package: pip install xmanager "
                          "(or pip install -e '.[xmanager]')") from error
    return xm, xm_local


def accelerator_resource(resources: Resources, executor: str = "local") -> str | None:
    """xmanager's resource name for the accelerator: 'h100', 'a100', 'tpu_v5e', 'local_gpu'; None on CPU."""
    if resources.accelerator == "cpu":
        return None
    kind = (resources.accelerator_type or "").strip().lower().replace("-", "_")
    if resources.accelerator == "gpu":
        if kind:
            return kind
        if executor == "local":
            return "local_gpu"
        raise ValueError("--accelerator_type is needed for GPUs on a cloud executor (e.g. A100, H100, T4)")
    if not kind:
        raise ValueError("--accelerator_type is needed for TPUs (e.g. v4, v5e, v5p)")
    return kind if kind.startswith("tpu_") else f"tpu_{kind}"


def xm_requirements(resources: Resources, executor: str = "local") -> dict[str, Any]:
    """Keyword arguments of `xm.JobRequirements` for one job, e.g. {'h100': 1, 'cpu': 8, 'memory': 32 GiB}."""
    requirements: dict[str, Any] = {}
    accelerator = accelerator_resource(resources, executor)
    if accelerator:
        requirements[accelerator] = resources.accelerator_count
    if resources.cpus:
        requirements["cpu"] = resources.cpus
    if resources.memory_gb:
        requirements["memory"] = int(resources.memory_gb * GIB)
    return requirements


def job_name(spec: JobSpec) -> str:
    """xmanager job names allow letters, digits, '_' and '-'."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in spec.name)


def _packageable(xm: Any, xm_local: Any, module: str, python: str, executor: str, base_image: str | None) -> Any:
    if executor == "local":
        return xm.binary(executor_spec=xm_local.Local.Spec(), path=python, args=["-m", module])
    spec = xm_local.Vertex.Spec() if executor == "vertex" else xm_local.Kubernetes.Spec()
    return xm.python_container(executor_spec=spec, path=REPO_ROOT, base_image=base_image or DEFAULT_BASE_IMAGE,
                               entrypoint=xm.ModuleName(module))


def _executor(xm: Any, xm_local: Any, resources: Resources, executor: str) -> Any:
    requirements = xm.JobRequirements(**xm_requirements(resources, executor))
    if executor == "local":
        return xm_local.Local(requirements=requirements, experimental_stream_output=True)
    if executor == "vertex":
        return xm_local.Vertex(requirements=requirements)
    return xm_local.Kubernetes(requirements=requirements)


def launch_xmanager(jobs: Sequence[JobSpec], *, title: str, executor: str = "local",
                    base_image: str | None = None) -> int:
    """Adds one work unit per job to a new xm_local experiment; returns the experiment id."""
    if executor not in EXECUTORS:
        raise ValueError(f"xm executor must be one of {EXECUTORS}, not {executor!r}")
    if not jobs:
        return 0
    xm, xm_local = import_xmanager()
    first = jobs[0]
    for job in jobs:
        if "://" not in job.workdir:
            os.makedirs(job.workdir, exist_ok=True)
    with xm_local.create_experiment(experiment_title=title) as experiment:
        [executable] = experiment.package([
            _packageable(xm, xm_local, first.module, first.python, executor, base_image)])
        for spec in jobs:
            experiment.add(xm.Job(executable=executable, executor=_executor(xm, xm_local, spec.resources, executor),
                                  args=list(spec.args), env_vars=dict(spec.env), name=job_name(spec)))
        experiment_id = experiment.experiment_id
    return experiment_id
