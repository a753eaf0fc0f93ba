"""Crash safety of the codec CLI: outputs appear complete or not at all, even under SIGKILL."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc.decoder import inspect_bitstream
from nnlc.decoder.files import atomic_file, atomic_write, remove_stale_temporaries, writer_tag

LAYERS = 32  # 8.4M float weights: about 2 s to compress on one free core, startup included


def _layers_model(layers: int = LAYERS, width: int = 512) -> onnx.ModelProto:
    """A MatMul chain with layers x width**2 float weights (a few seconds to compress)."""
    rng = np.random.default_rng(0)
    initializers, nodes, value = [], [], "x"
    for index in range(layers):
        weight = (rng.standard_normal((width, width)) * 0.05).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(helper.make_node("MatMul", [value, f"w{index}"], [f"h{index}"]))
        value = f"h{index}"
    graph = helper.make_graph(nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(value, TensorProto.FLOAT, [1, width])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "layers.onnx"
    onnx.save(_layers_model(), str(path))
    return path


def _compress_command(model_path, output_directory: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "nnlc.cli", "compress", str(model_path), "-o", str(output_directory / "m.nnlc"),
            "--qp=-36", f"--report={output_directory / 'report.json'}", "--quiet"]


def _check_complete(directory: pathlib.Path) -> None:
    """Whatever exists under an output name is complete: it parses and matches the report."""
    bitstream, report = directory / "m.nnlc", directory / "report.json"
    if bitstream.exists():
        facts = inspect_bitstream(bitstream.read_bytes())
        assert len(facts["tensors"]) == LAYERS
    if report.exists():
        assert bitstream.exists()  # written after the bitstream
        assert json.loads(report.read_text())["bytes"] == bitstream.stat().st_size


@pytest.fixture(scope="module")
def completed_run(model_path, tmp_path_factory) -> tuple[pathlib.Path, float]:
    """The output directory and the duration of one complete `nnlc compress`."""
    directory = tmp_path_factory.mktemp("completed")
    start = time.perf_counter()
    subprocess.run(_compress_command(model_path, directory), check=True, capture_output=True)
    return directory, time.perf_counter() - start


def test_a_completed_compress_writes_complete_outputs_and_no_temporaries(completed_run):
    directory, _ = completed_run
    assert sorted(path.name for path in directory.iterdir()) == ["m.nnlc", "report.json"]
    _check_complete(directory)


@pytest.mark.parametrize("seconds, fraction", [(0.2, None), (0.5, None), (1.0, None), (None, 0.5), (None, 0.8),
                                               (None, 0.95)])
def test_sigkilled_compress_leaves_no_partial_output(model_path, completed_run, tmp_path, seconds, fraction):
    """Killed after fixed times, or a fraction of a complete run's duration (startup, encoding, writing)."""
    delay = seconds if seconds is not None else fraction * completed_run[1]
    process = subprocess.Popen(_compress_command(model_path, tmp_path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert all(name in ("m.nnlc", "report.json") or name.startswith(".tmp-") for name in names), names
    _check_complete(tmp_path)
    if any(name.startswith(".tmp-") for name in names):  # killed while writing: the next run cleans up
        subprocess.run(_compress_command(model_path, tmp_path), check=True, capture_output=True)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["m.nnlc", "report.json"]
        _check_complete(tmp_path)


# A writer that SIGKILLs itself in the middle of a write: deterministic, unlike the timed kills above.
KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from nnlc.decoder.files import atomic_file
    with atomic_file(sys.argv[1]) as stream:
        stream.write(b"half of the data")
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_in_the_middle_of_a_write_leaves_the_old_file_and_a_hidden_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous complete content")
    result = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(target)])
    assert result.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"previous complete content"
    leftovers = [path.name for path in tmp_path.iterdir() if path != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-") and leftovers[0].endswith("-out.bin")
    atomic_write(str(target), b"new")  # the next write to the same path removes the dead writer's file
    assert [path.name for path in tmp_path.iterdir()] == ["out.bin"] and target.read_bytes() == b"new"


def test_a_failing_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_file(str(target)) as stream:
            stream.write(b"partial")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_live_processes_are_kept(tmp_path):
    target = tmp_path / "out.bin"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    host = writer_tag(0).split(".")[1]
    try:
        live = tmp_path / f".tmp-{sleeper.pid}.{host}-abc-out.bin"
        live.write_bytes(b"in progress")
        other_file = tmp_path / f".tmp-{sleeper.pid}.{host}-abc-other.bin"
        other_file.write_bytes(b"another output's")
        other_host = tmp_path / f".tmp-{sleeper.pid}.0badc0de-abc-out.bin"
        other_host.write_bytes(b"a writer on another machine (shared file system)")
        remove_stale_temporaries(str(target))
        assert live.exists() and other_file.exists() and other_host.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    remove_stale_temporaries(str(target))
    assert not live.exists() and other_file.exists() and other_host.exists()


def test_outputs_keep_the_usual_permissions(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write(str(target), b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_decompress_with_external_data_is_atomic_too(completed_run, tmp_path):
    bitstream = completed_run[0] / "m.nnlc"
    output = tmp_path / "d.onnx"
    command = [sys.executable, "-m", "nnlc.cli", "decompress", str(bitstream), "-o", str(output), "--external_data"]
    subprocess.run(command, check=True, capture_output=True)
    assert (tmp_path / "d.onnx.data").stat().st_size >= LAYERS * 512 * 512 * 4
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".tmp-")]
    decoded = onnx.load(str(output))
    assert len(decoded.graph.initializer) == LAYERS and decoded.graph.initializer[0].raw_data
