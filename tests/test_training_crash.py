"""Crash safety of training: SIGKILL at several points, resume, same final bitstream."""

import os
import signal
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the last kill comes at step >= 30 of 120: the 90 steps left keep the run from finishing on its own
# between two polls, whatever the machine's speed (the test asserts that it was killed)
NUM_STEPS = 120
COMMAND = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/test.py",
           f"--config.num_steps={NUM_STEPS}", "--config.checkpoint_every=10", "--config.float_train_steps=60"]


def _run(workdir):
    subprocess.run(COMMAND + [f"--workdir={workdir}"], cwd=ROOT, check=True, capture_output=True)


def _checkpoint_steps(workdir):
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if os.path.isdir(folder) else []


def _kill_when(workdir, ready, timeout=600):
    """Starts (or resumes) the run and SIGKILLs it once `ready()`; fails if it ended on its own."""
    process = subprocess.Popen(COMMAND + [f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended on its own (exit {process.returncode}) before the kill"


def test_sigkill_then_resume_gives_the_same_bitstream(tmp_path):
    reference = tmp_path / "reference"
    _run(reference)
    expected = (reference / "model.nnlc").read_bytes()
    workdir = tmp_path / "killed"
    # 1: during float training or compilation (nothing checkpointed yet); 2: after the first checkpoint;
    # 3: after a later checkpoint
    _kill_when(workdir, lambda: (workdir / "original.onnx").exists())
    _kill_when(workdir, lambda: len(_checkpoint_steps(workdir)) >= 1)
    _kill_when(workdir, lambda: bool(_checkpoint_steps(workdir)) and _checkpoint_steps(workdir)[-1] >= 30)
    assert not (workdir / "result.json").exists()
    _run(workdir)
    assert (workdir / "model.nnlc").read_bytes() == expected
    leftovers = [name for name in os.listdir(workdir) if name.startswith(".tmp-")]
    assert not leftovers
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in open(workdir / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == NUM_STEPS
