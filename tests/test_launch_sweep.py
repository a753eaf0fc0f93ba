"""launch.sweep: rate points from configs, job specs per backend, and the local backend running for real."""

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from launch import jobs, points  # noqa: E402
from launch.backends import local, slurm, xmanager  # noqa: E402

TEST_CONFIG = os.path.join(ROOT, "experiments", "configs", "test.py")

# Stands in for experiments.main: records its flags and thread env in result.json; fails on request.
STUB_MAIN = textwrap.dedent("""
    import json, os, sys
    args = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[1:])
    print("stub", args)
    if args.get("config.lmbda") == os.environ.get("STUB_FAIL_LMBDA"):
        print("boom: this point fails")
        sys.exit(3)
    os.makedirs(args["workdir"], exist_ok=True)
    with open(os.path.join(args["workdir"], "result.json"), "w") as f:
        json.dump({"args": args, "omp": os.environ.get("OMP_NUM_THREADS")}, f)
""")


def write_config(tmp_path, body: str, name: str = "cfg.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


NESTED_CONFIG = """
    import ml_collections

    def get_config(arg=None):
        config = ml_collections.ConfigDict()
        config.lmbda = 0.01
        config.num_steps = 10
        config.flag = False
        config.name = "a"
        config.sizes = (1, 2)
        config.reparam = ml_collections.ConfigDict({"conv_decoder": "dct", "init_qp": -32})
        if arg == "big":
            config.num_steps = 1000
        return config

    def sweep(add, arg=None):
        for lmbda in (0.1, 1e-05):
            add(lmbda=lmbda, **{"reparam.conv_decoder": "scalar" if arg == "scalar" else "dct"})
"""


def test_point_names_are_sorted_deterministic_and_path_safe():
    name = points.point_name({"reparam.conv_decoder": "scalar", "lmbda": 0.1})
    assert name == "lmbda=0.1,reparam.conv_decoder=scalar"
    assert points.point_name({"lmbda": 1e-05, "flag": True}) == "flag=true,lmbda=1e-05"
    assert points.point_name({"model": "../shared/models/x.onnx"}) == "model=.._shared_models_x.onnx"
    long_a, long_b = ({"name": c * 300} for c in "ab")
    assert len(points.point_name(long_a)) <= points.MAX_NAME_CHARS
    assert points.point_name(long_a) != points.point_name(long_b)
    assert points.parse_point_name("lmbda=0.1,reparam.conv_decoder=scalar") == {
        "lmbda": "0.1", "reparam.conv_decoder": "scalar"}


def test_collect_points_from_the_test_config_and_a_config_with_an_argument(tmp_path):
    path, arg = points.split_config_arg(TEST_CONFIG)
    assert arg is None
    assert points.collect_points(points.load_config_module(path)) == [{"lmbda": 0.02}, {"lmbda": 0.2}]
    config_path = write_config(tmp_path, NESTED_CONFIG)
    path, arg = points.split_config_arg(config_path + ":scalar")
    collected = points.collect_points(points.load_config_module(path), arg)
    assert collected == [{"lmbda": 0.1, "reparam.conv_decoder": "scalar"},
                         {"lmbda": 1e-05, "reparam.conv_decoder": "scalar"}]


def test_check_points_rejects_unknown_keys_and_wrong_types(tmp_path):
    module = points.load_config_module(write_config(tmp_path, NESTED_CONFIG))
    config = module.get_config()
    config.lock()
    points.check_points([{"lmbda": 0.1, "reparam.conv_decoder": "scalar"}], config)
    with pytest.raises(ValueError, match="does not fit"):
        points.check_points([{"lmbda": 0.1, "reparam.no_such_key": 1}], config)
    with pytest.raises(ValueError, match="does not fit"):
        points.check_points([{"num_steps": "many"}], config)


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # inside ml_collections
def test_flag_values_parse_back_to_the_same_config_values(tmp_path):
    config_path = write_config(tmp_path, NESTED_CONFIG)
    import numpy as np

    point = {"lmbda": np.float64(1e-05), "num_steps": 7, "flag": True, "name": "b c", "sizes": (3, 4, 5),
             "reparam.conv_decoder": "scalar", "reparam.init_qp": -40}
    argv = ["prog", f"--config={config_path}", *points.override_flags(point)]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "test", flag_values=flag_values, lock_config=True, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert (config.lmbda, config.num_steps, config.flag, config.name) == (1e-05, 7, True, "b c")
    assert tuple(config.sizes) == (3, 4, 5)
    assert (config.reparam.conv_decoder, config.reparam.init_qp) == ("scalar", -40)


def test_build_jobs_gives_each_point_its_workdir_flags_and_env(tmp_path):
    built = jobs.build_jobs([{"lmbda": 0.02}, {"lmbda": 0.2, "num_steps": 3}], config="cfg.py:arg", root="/r",
                            common_overrides={"num_steps": 5, "batch_size": 8}, threads_per_job=1)
    assert [job.name for job in built] == ["lmbda=0.02", "lmbda=0.2,num_steps=3"]
    assert built[0].workdir == "/r/lmbda=0.02" and built[0].log_path == "/r/lmbda=0.02/log.txt"
    assert built[0].args == ["--config=cfg.py:arg", "--workdir=/r/lmbda=0.02", "--config.batch_size=8",
                             "--config.lmbda=0.02", "--config.num_steps=5"]
    assert "--config.num_steps=3" in built[1].args and "--config.num_steps=5" not in built[1].args  # point wins
    assert built[0].command[:3] == [sys.executable, "-m", "experiments.main"]
    env = built[0].env
    assert env["OMP_NUM_THREADS"] == "1" and "xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]
    assert all(flag.startswith("--") for flag in env["XLA_FLAGS"].split())  # XLA ignores flags after a bare word
    assert "JAX_PLATFORMS" not in env and env["PYTHONUNBUFFERED"] == "1"
    with pytest.raises(ValueError, match="share the directory name"):
        jobs.build_jobs([{"lmbda": 0.1}, {"lmbda": 0.1}], config="c.py", root="/r")


def test_gpu_and_tpu_jobs_name_their_jax_platform_and_cpu_threads():
    gpu = jobs.Resources(accelerator="gpu", cpus=8)
    assert gpu.accelerator_count == 1
    [job] = jobs.build_jobs([{"lmbda": 0.1}], config="c.py", root="/r", resources=gpu)
    assert job.env["JAX_PLATFORMS"] == "cuda,cpu" and job.env["OMP_NUM_THREADS"] == "8"
    assert "XLA_FLAGS" not in job.env
    tpu = jobs.Resources(accelerator="tpu", accelerator_type="v5e", accelerator_count=4)
    assert jobs.job_env(tpu)["JAX_PLATFORMS"] == "tpu,cpu"
    with pytest.raises(ValueError):
        jobs.Resources(accelerator="fpga")
    with pytest.raises(ValueError):
        jobs.Resources(accelerator="cpu", accelerator_count=2)


def test_slurm_parameters_from_resources():
    resources = jobs.Resources(accelerator="gpu", accelerator_type="A100", accelerator_count=2, cpus=16,
                               memory_gb=64, time_minutes=120, partition="gpu")
    params = slurm.submitit_parameters(resources, name="nnlc-test", max_parallel=4, extra={"account": "lab"})
    assert params == {"name": "nnlc-test", "nodes": 1, "tasks_per_node": 1, "slurm_gres": "gpu:A100:2",
                      "cpus_per_task": 16, "mem_gb": 64, "timeout_min": 120, "slurm_partition": "gpu",
                      "slurm_array_parallelism": 4, "slurm_additional_parameters": {"account": "lab"}}
    untyped = slurm.submitit_parameters(jobs.Resources(accelerator="gpu", accelerator_count=4), name="n")
    assert untyped["gpus_per_node"] == 4 and "slurm_gres" not in untyped
    cpu_only = slurm.submitit_parameters(jobs.Resources(cpus=2), name="n")
    assert cpu_only == {"name": "n", "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 2}
    with pytest.raises(ValueError, match="TPU"):
        slurm.submitit_parameters(jobs.Resources(accelerator="tpu", accelerator_type="v4"), name="n")


def test_xmanager_requirements_from_resources():
    h100 = jobs.Resources(accelerator="gpu", accelerator_type="H100", accelerator_count=2, cpus=8, memory_gb=32)
    assert xmanager.xm_requirements(h100, "vertex") == {"h100": 2, "cpu": 8, "memory": 32 * 2 ** 30}
    tpu = jobs.Resources(accelerator="tpu", accelerator_type="v5e", accelerator_count=4)
    assert xmanager.xm_requirements(tpu, "vertex") == {"tpu_v5e": 4}
    assert xmanager.xm_requirements(jobs.Resources(accelerator="gpu"), "local") == {"local_gpu": 1}
    assert xmanager.xm_requirements(jobs.Resources(cpus=2), "local") == {"cpu": 2}
    with pytest.raises(ValueError, match="accelerator_type"):
        xmanager.xm_requirements(jobs.Resources(accelerator="gpu"), "vertex")
    [job] = jobs.build_jobs([{"lmbda": 0.1}], config="c.py", root="/r")
    assert xmanager.job_name(job) == "lmbda_0_1"


def test_cluster_backends_say_how_to_install_their_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "xmanager", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ImportError, match="pip install xmanager"):
        xmanager.import_xmanager()
    with pytest.raises(ImportError, match="pip install submitit"):
        slurm.import_submitit()


def test_process_env_joins_xla_flags_and_makes_the_repo_importable():
    env = local.process_env({"XLA_FLAGS": "--a=1", "OMP_NUM_THREADS": "1"}, base={"XLA_FLAGS": "--b=2", "HOME": "/h"})
    assert env["XLA_FLAGS"] == "--a=1 --b=2" and env["OMP_NUM_THREADS"] == "1" and env["HOME"] == "/h"
    assert local.REPO_ROOT in env["PYTHONPATH"].split(os.pathsep)


def stub_jobs(tmp_path, lmbdas=(0.02, 0.2)):
    (tmp_path / "stub").mkdir(exist_ok=True)
    (tmp_path / "stub" / "stub_main.py").write_text(STUB_MAIN)
    return jobs.build_jobs([{"lmbda": v} for v in lmbdas], config=TEST_CONFIG, root=str(tmp_path / "sweep"),
                           threads_per_job=1, module="stub_main", extra_env={"PYTHONPATH": str(tmp_path / "stub")})


def test_local_backend_runs_points_in_parallel_and_skips_finished_ones(tmp_path):
    built = stub_jobs(tmp_path)
    out = io.StringIO()
    assert local.run_local(built, max_parallel=2, out=out, poll_seconds=0.05) == 0
    lines = out.getvalue().splitlines()
    assert sum("started" in line for line in lines) == 2 and sum("finished" in line for line in lines) == 2
    assert any(job.log_path in line for job in built for line in lines)
    for job in built:
        result = json.loads(open(os.path.join(job.workdir, "result.json")).read())
        assert result["args"]["workdir"] == job.workdir and result["omp"] == "1"
        assert result["args"]["config.lmbda"] == str(job.point["lmbda"])
        assert "stub" in open(job.log_path).read()
    out = io.StringIO()
    assert local.run_local(built, max_parallel=2, out=out, poll_seconds=0.05) == 0
    assert out.getvalue().count("skipped") == 2 and "started" not in out.getvalue()


def test_local_backend_reports_a_failed_point_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_FAIL_LMBDA", "0.2")
    built = stub_jobs(tmp_path)
    out = io.StringIO()
    assert local.run_local(built, max_parallel=1, out=out, poll_seconds=0.05) == 1
    text = out.getvalue()
    assert "FAILED" in text and "exit 3" in text and built[1].log_path in text and "boom" in text
    assert os.path.exists(os.path.join(built[0].workdir, "result.json"))


def run_sweep(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "launch.sweep", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_sweep_dry_run_prints_cluster_jobs_without_a_cluster(tmp_path):
    run = run_sweep(f"--config={TEST_CONFIG}", f"--workdir={tmp_path}", "--backend=slurm", "--accelerator=gpu",
                    "--accelerator_type=H100", "--cpus=4", "--memory_gb=16", "--time_minutes=30",
                    "--partition=gpu", "--slurm_extra=qos=high", "--config.num_steps=3", "--dry_run")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("-m experiments.main") == 2
    assert f"--workdir={tmp_path}/lmbda=0.2 --config.lmbda=0.2 --config.num_steps=3" in run.stdout
    assert "'slurm_gres': 'gpu:H100:1'" in run.stdout and "'slurm_additional_parameters': {'qos': 'high'}" in run.stdout
    run = run_sweep(f"--config={TEST_CONFIG}", f"--workdir={tmp_path}", "--backend=xmanager", "--xm_executor=vertex",
                    "--accelerator=tpu", "--accelerator_type=v5e", "--accelerator_count=8", "--dry_run")
    assert run.returncode == 0, run.stderr
    assert "{'tpu_v5e': 8}" in run.stdout and "JAX_PLATFORMS=tpu,cpu" in run.stdout
    assert not list(tmp_path.iterdir())  # a dry run creates nothing
    bad = run_sweep(f"--config={TEST_CONFIG}", f"--workdir={tmp_path}", "--config.no_such_key=1", "--dry_run")
    assert bad.returncode != 0


@pytest.mark.slow
def test_local_sweep_runs_experiments_main_for_real_and_resumes(tmp_path):
    args = [f"--config={TEST_CONFIG}", f"--workdir={tmp_path}", "--max_parallel=2", "--config.num_steps=3",
            "--config.float_train_steps=30", "--config.log_every=3", "--config.checkpoint_every=3"]
    run = run_sweep(*args)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("finished lmbda=") == 2
    for lmbda in (0.02, 0.2):
        workdir = tmp_path / f"lmbda={lmbda}"
        result = json.loads((workdir / "result.json").read_text())
        assert result["lmbda"] == lmbda and result["bytes"] > 0 and "accuracy" in result["evaluation"]
        assert json.loads((workdir / "config.json").read_text())["num_steps"] == 3
        assert (workdir / "model.nnlc").exists() and "step 3/3" in (workdir / "log.txt").read_text()
    again = run_sweep(*args, timeout=120)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2 and "started" not in again.stdout
