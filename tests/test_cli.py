"""The `nnlc` and `nnlc-decode` command lines, run as users run them."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import onnx_builders
from nnlc import onnx_io


def nnlc(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "nnlc.cli", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(result.stderr)
    return result


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model.onnx"
    onnx.save(onnx_builders.conv_bn_gemm()[0], str(path))
    return path


def test_compress_inspect_decompress(model_path, tmp_path):
    bitstream, report = tmp_path / "m.nnlc", tmp_path / "report.json"
    out = nnlc("compress", model_path, "-o", bitstream, "--qp=-30", f"--report={report}").stdout
    assert "bits/param" in out and bitstream.stat().st_size > 0
    assert json.loads(report.read_text())["bytes"] == bitstream.stat().st_size
    table = nnlc("inspect", bitstream).stdout
    assert "conv.weight" in table and "conv_kernel" in table and "16x3x3x3" in table
    facts = json.loads(nnlc("inspect", bitstream, "--json").stdout)
    assert len(facts["tensors"]) == 8
    decoded = tmp_path / "d.onnx"
    nnlc("decompress", bitstream, "-o", decoded)
    onnx.checker.check_model(onnx.load(str(decoded)))
    quantized = tmp_path / "q.onnx"
    nnlc("decompress", bitstream, "-o", quantized, "--quantized")
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(quantized)).graph.node)


def test_nnlc_decode_console_entry_and_no_topology(model_path, tmp_path):
    bitstream = tmp_path / "m.nnlc"
    nnlc("compress", model_path, "-o", bitstream, "--bits_per_param=6", "--no_topology")
    decoded = tmp_path / "d.onnx"
    run = [sys.executable, "-m", "nnlc.decoder", str(bitstream), "-o", str(decoded)]
    failed = subprocess.run(run, capture_output=True, text=True)
    assert failed.returncode == 1 and "--structure" in failed.stderr and not decoded.exists()
    subprocess.run(run + ["--structure", str(model_path)], check=True, capture_output=True)
    original = onnx_io.find_float_tensors(onnx.load(str(model_path)))
    steps = {row["name"]: row["step"] or 0.0 for row in json.loads(nnlc("inspect", bitstream, "--json").stdout)["tensors"]}
    for name, record in onnx_io.find_float_tensors(onnx.load(str(decoded))).items():
        assert np.max(np.abs(record.array - original[name].array)) <= steps[name] / 2 * (1 + 1e-6)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("not_onnx", "not an ONNX model"),
    ("not_nnlc", "not an nnlc bitstream"),
    ("corrupted", "unit 9: corrupted"),
    ("version", "unsupported bitstream version"),
])
def test_one_line_errors(model_path, tmp_path, case, message):
    bitstream = tmp_path / "m.nnlc"
    nnlc("compress", model_path, "-o", bitstream, "--qp=-30")
    data = bytearray(bitstream.read_bytes())
    target = tmp_path / "bad"
    if case == "missing":
        command = ("compress", tmp_path / "absent.onnx", "-o", tmp_path / "x.nnlc")
    elif case == "not_onnx":
        target.write_bytes(b"\x00garbage" * 10)
        command = ("compress", target, "-o", tmp_path / "x.nnlc")
    else:
        if case == "not_nnlc":
            data[:4] = b"ONNX"
        elif case == "corrupted":
            data[-40] ^= 0xFF  # inside the last tensor unit: header 0, topology 1, tensors 2..9
        else:
            data[4] = 9
        target.write_bytes(bytes(data))
        command = ("decompress", target, "-o", tmp_path / "x.onnx")
    result = nnlc(*command, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x.nnlc").exists() and not (tmp_path / "x.onnx").exists()


def test_usage_error_for_unknown_command():
    result = nnlc("squeeze", "x", check=False)
    assert result.returncode == 2 and "usage" in result.stderr
