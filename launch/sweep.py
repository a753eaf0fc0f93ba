"""Runs every rate point a config's `sweep(add)` lists, locally or on a cluster (a thin absl main).

    python -m launch.sweep --config=experiments/configs/lenet5_digits.py --workdir=/tmp/lenet5_sweep
    python -m launch.sweep --config=experiments/configs/test.py --workdir=/tmp/s --config.num_steps=10 \
        --max_parallel=2
    python -m launch.sweep --config=... --workdir=ROOT --backend=slurm --accelerator=gpu --cpus=8 \
        --memory_gb=32 --time_minutes=120 --partition=gpu --dry_run

Each point runs `python -m experiments.main --config=CONFIG --workdir=ROOT/<point> --config.k=v ...` in
ROOT/<point>, named by its sorted keys (ROOT/lmbda=0.1,reparam.conv_decoder=scalar). `--config.k=v`
given here applies to every point. Points whose workdir holds result.json are skipped; re-running a
sweep resumes the interrupted ones. See docs/sweeps.md.
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from launch import jobs as jobs_lib
from launch import points as points_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/configs/NAME.py[:ARG]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Root directory; each point runs in ROOT/<point name>.")
flags.DEFINE_enum("backend", "local", ["local", "xmanager", "slurm"], "Where the points run.")
flags.DEFINE_integer("max_parallel", None, "Points running at once (local: default CPUs // --cpus; "
                     "slurm: array parallelism).")
flags.DEFINE_bool("dry_run", False, "Print the jobs (commands, env, resources) and launch nothing.")
flags.DEFINE_enum("accelerator", "cpu", list(jobs_lib.ACCELERATORS), "Accelerator of each job.")
flags.DEFINE_integer("accelerator_count", 0, "Accelerators per job (GPUs on its node, TPU chips); "
                     "default 1 with --accelerator=gpu|tpu.")
flags.DEFINE_string("accelerator_type", None, "e.g. A100, H100, T4 (GPU) or v4, v5e (TPU).")
flags.DEFINE_integer("cpus", None, "CPU cores per job (local: threads per job, default 1).")
flags.DEFINE_float("memory_gb", None, "Memory per job in GiB (cluster backends).")
flags.DEFINE_integer("time_minutes", None, "Time limit per job in minutes (slurm).")
flags.DEFINE_string("partition", None, "Slurm partition.")
flags.DEFINE_multi_string("slurm_extra", [], "Extra sbatch option KEY=VALUE (account=..., qos=...); repeatable.")
flags.DEFINE_string("slurm_folder", None, "Where submitit keeps its scripts and logs (default ROOT/slurm).")
flags.DEFINE_enum("slurm_cluster", "slurm", ["slurm", "local", "debug"],
                  "submitit cluster: 'local'/'debug' try the slurm adapter on this machine.")
flags.DEFINE_enum("xm_executor", "local", ["local", "vertex", "kubernetes"], "xmanager executor.")
flags.DEFINE_string("xm_base_image", None, "Base image of the container (vertex, kubernetes).")
flags.DEFINE_string("xm_title", None, "xmanager experiment title (default: nnlc-<config name>).")
flags.mark_flags_as_required(["config", "workdir"])


def resources_from_flags() -> jobs_lib.Resources:
    return jobs_lib.Resources(accelerator=FLAGS.accelerator, accelerator_count=FLAGS.accelerator_count,
                              accelerator_type=FLAGS.accelerator_type, cpus=FLAGS.cpus,
                              memory_gb=FLAGS.memory_gb, time_minutes=FLAGS.time_minutes,
                              partition=FLAGS.partition)


def key_values(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise app.UsageError(f"expected KEY=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed


def describe(job: jobs_lib.JobSpec, backend_view: object) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(job.env.items()))
    return f"{job.name}\n  {env} {shlex.join(job.command)}\n  {backend_view}"


def run_local(jobs: list[jobs_lib.JobSpec], max_parallel: int) -> int:
    from launch.backends import local

    if FLAGS.dry_run:
        for job in jobs:
            print(describe(job, "finished" if jobs_lib.is_finished(job.workdir) else "to run"))
        return 0
    try:
        failed = local.run_local(jobs, max_parallel=max_parallel)
    except KeyboardInterrupt:
        print("interrupted: the same command resumes the unfinished points")
        return 130
    print(f"{len(jobs) - failed} of {len(jobs)} points finished" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def submit_slurm(jobs: list[jobs_lib.JobSpec], resources: jobs_lib.Resources, name: str, root: str) -> int:
    from launch.backends import slurm

    extra = key_values(FLAGS.slurm_extra)
    params = slurm.submitit_parameters(resources, name=name, max_parallel=FLAGS.max_parallel, extra=extra)
    if FLAGS.dry_run:
        for job in jobs:
            print(describe(job, f"submitit: {params}"))
        return 0
    folder = FLAGS.slurm_folder or os.path.join(root, "slurm")
    ids = slurm.submit_slurm(jobs, folder=folder, name=name, max_parallel=FLAGS.max_parallel, extra=extra,
                             cluster=FLAGS.slurm_cluster)
    for job, job_id in zip(jobs, ids):
        print(f"submitted {job_id} {job.name}  log: {job.log_path}")
    return 0


def launch_xmanager(jobs: list[jobs_lib.JobSpec], resources: jobs_lib.Resources, name: str) -> int:
    from launch.backends import xmanager

    if FLAGS.dry_run:
        requirements = xmanager.xm_requirements(resources, FLAGS.xm_executor)
        for job in jobs:
            print(describe(job, f"xm.JobRequirements({requirements})"))
        return 0
    experiment_id = xmanager.launch_xmanager(jobs, title=FLAGS.xm_title or name, executor=FLAGS.xm_executor,
                                             base_image=FLAGS.xm_base_image)
    print(f"xmanager experiment {experiment_id}: {len(jobs)} jobs")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config_spec = FLAGS["config"].config_filename
    config_path, config_arg = points_lib.split_config_arg(config_spec)
    try:
        points = points_lib.collect_points(points_lib.load_config_module(config_path), config_arg)
        points_lib.check_points(points, FLAGS.config)
        resources = resources_from_flags()
    except (OSError, ValueError) as error:
        print(f"launch.sweep: {error}", file=sys.stderr)
        return 2
    remote = FLAGS.backend == "xmanager" and FLAGS.xm_executor != "local"
    root = FLAGS.workdir if remote or "://" in FLAGS.workdir else os.path.abspath(FLAGS.workdir)
    name = f"nnlc-{os.path.splitext(os.path.basename(config_path))[0]}"

    threads = max_parallel = None
    if FLAGS.backend == "local":
        from launch.backends import local

        max_parallel = FLAGS.max_parallel or local.default_max_parallel(FLAGS.cpus or 1)
        threads = local.threads_per_job(max_parallel, FLAGS.cpus)
    jobs = jobs_lib.build_jobs(points, config=config_spec, root=root, resources=resources,
                               common_overrides=config_flags.get_override_values(FLAGS["config"]),
                               threads_per_job=threads,
                               python="python" if remote else sys.executable)  # a container's python
    finished = sum(jobs_lib.is_finished(job.workdir) for job in jobs)
    print(f"{len(jobs)} points from {config_spec} in {root} ({finished} finished); backend {FLAGS.backend}"
          + (f", {max_parallel} at a time, {threads} thread(s) each" if FLAGS.backend == "local" else ""),
          flush=True)
    if FLAGS.backend == "local":
        return run_local(jobs, max_parallel)
    pending = [job for job in jobs if not jobs_lib.is_finished(job.workdir)]
    if FLAGS.backend == "slurm":
        return submit_slurm(pending, resources, name, root)
    return launch_xmanager(pending, resources, name)


if __name__ == "__main__":
    app.run(main)
