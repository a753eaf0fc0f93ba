"""Submits JobSpecs to slurm through submitit, as one job array with one task per rate point.

    pip install submitit      # the optional extra
    python -m launch.sweep --backend=slurm --config=... --workdir=ROOT --accelerator=gpu \
        --accelerator_count=1 --cpus=8 --memory_gb=32 --time_minutes=120 --partition=gpu

`submitit_parameters` (pure) turns Resources into `AutoExecutor.update_parameters` arguments; each
task runs `run_command`, which writes the point's log to `<workdir>/log.txt` like the local backend.
The workdirs must be on a file system the nodes share.
"""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from launch.jobs import JobSpec, Resources


def import_submitit() -> Any:
    """The submitit module, or an ImportError saying how to install it."""
    try:
        import submitit
    except ImportError as error:
        raise ImportError("the slurm backend needs the `submitit` package: pip install submitit "
                          "(or pip install -e '.[slurm]')") from error
    return submitit


def submitit_parameters(resources: Resources, *, name: str, max_parallel: int | None = None,
                        extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`AutoExecutor.update_parameters` arguments for every task of the array: one node, one task each.

    A GPU type is passed as a gres (`gpu:A100:1`, with the type spelled as the site names it);
    without one, `gpus_per_node`. `extra` goes to sbatch as `--key=value` (account, qos, constraint).
    """
    if resources.accelerator == "tpu":
        raise ValueError("the slurm backend runs on CPUs and GPUs; use --backend=xmanager for TPUs")
    params: dict[str, Any] = {"name": name, "nodes": 1, "tasks_per_node": 1}
    if resources.accelerator == "gpu":
        if resources.accelerator_type:
            params["slurm_gres"] = f"gpu:{resources.accelerator_type}:{resources.accelerator_count}"
        else:
            params["gpus_per_node"] = resources.accelerator_count
    if resources.cpus:
        params["cpus_per_task"] = resources.cpus
    if resources.memory_gb:
        params["mem_gb"] = resources.memory_gb
    if resources.time_minutes:
        params["timeout_min"] = resources.time_minutes
    if resources.partition:
        params["slurm_partition"] = resources.partition
    if max_parallel:
        params["slurm_array_parallelism"] = max_parallel
    if extra:
        params["slurm_additional_parameters"] = dict(extra)
    return params


def run_command(command: Sequence[str], env: Mapping[str, str], log_path: str) -> int:
    """Runs on the node: the point's command, output appended to its log; raises if it fails."""
    from launch.backends.local import process_env

    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {shlex.join(command)}\n")
        log.flush()
        code = subprocess.call(list(command), stdout=log, stderr=subprocess.STDOUT, env=process_env(env))
    if code:
        raise RuntimeError(f"{shlex.join(command)} exited with {code}; see {log_path}")
    return code


def submit_slurm(jobs: Sequence[JobSpec], *, folder: str, name: str, max_parallel: int | None = None,
                 extra: Mapping[str, str] | None = None, cluster: str = "slurm") -> list[str]:
    """Submits the jobs as one array (all share the same resources); returns the slurm job ids.

    cluster: 'slurm', or 'local' / 'debug' (submitit's stand-ins, to try the adapter without a cluster).
    """
    if not jobs:
        return []
    submitit = import_submitit()
    resources = jobs[0].resources
    if any(job.resources != resources for job in jobs):
        raise ValueError("all points of one slurm array must ask for the same resources")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = submitit_parameters(resources, name=name, max_parallel=max_parallel, extra=extra)
    if cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    executor.update_parameters(**params)
    with executor.batch():
        submitted = [executor.submit(run_command, job.command, job.env, job.log_path) for job in jobs]
    return [str(job.job_id) for job in submitted]
