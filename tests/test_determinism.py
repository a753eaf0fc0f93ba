"""Same model + same settings => byte-identical bitstream and decoded model, in any process."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import onnx_builders
from nnlc import encoder
from nnlc.decoder import decode_bitstream

TESTS = pathlib.Path(__file__).resolve().parent

# Prints {case: [sha256 of the bitstream, sha256 of the decoded model]} for every builder model and
# a few settings; run in subprocesses with different hash seeds.
DIGESTS = textwrap.dedent("""
    import hashlib, json, sys
    sys.path.insert(0, {tests!r})
    import onnx_builders
    from nnlc import encoder
    from nnlc.decoder import decode_bitstream

    def digest(data):
        return hashlib.sha256(data).hexdigest()

    found = {{}}
    for name, build in sorted(onnx_builders.ALL_MODELS.items()):
        model, _ = build()
        for label, options in (("qp-36", dict(qp=-36)), ("bpp4", dict(qp=None, bits_per_param=4.0)),
                               ("lossless", dict(lossless_names=[".*bias.*", "w.*"])),
                               ("no_topology", dict(qp=-30, carry_topology=False))):
            bitstream = encoder.compress_model(model, **options).bitstream
            decoded = decode_bitstream(bitstream, structure=model, quantized=label == "qp-36")
            found[f"{{name}}/{{label}}"] = [digest(bitstream), digest(decoded.SerializeToString(deterministic=True))]
    print(json.dumps(found))
""").format(tests=str(TESTS))


def _digests_in_subprocesses(hash_seeds: list[str]) -> list[dict]:
    processes = [subprocess.Popen([sys.executable, "-c", DIGESTS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONHASHSEED": seed}) for seed in hash_seeds]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, errors) in zip(processes, outputs):
        assert process.returncode == 0, errors
    return [json.loads(output) for output, _ in outputs]


def test_identical_across_processes_with_different_hash_seeds():
    runs = _digests_in_subprocesses(["0", "1", "4242"])
    assert len(runs[0]) == 20
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("name", sorted(onnx_builders.ALL_MODELS))
def test_identical_across_repeated_runs_in_one_process(name):
    model, _ = onnx_builders.ALL_MODELS[name]()
    first = encoder.compress_model(model, qp=-34)
    again = [encoder.compress_model(model, qp=-34) for _ in range(2)]
    assert all(result.bitstream == first.bitstream for result in again)
    assert all(result.rows == first.rows for result in again)
    decoded = [decode_bitstream(first.bitstream).SerializeToString(deterministic=True) for _ in range(2)]
    assert decoded[0] == decoded[1]


def test_the_input_model_is_left_unchanged():
    model, _ = onnx_builders.if_constants()
    before = model.SerializeToString(deterministic=True)
    encoder.compress_model(model, qp=-30)
    assert model.SerializeToString(deterministic=True) == before


def test_equal_models_built_twice_give_equal_bitstreams():
    (first, _), (second, _) = onnx_builders.attention(), onnx_builders.attention()
    assert first is not second
    digests = {hashlib.sha256(encoder.compress_model(model, qp=-28).bitstream).hexdigest() for model in (first, second)}
    assert len(digests) == 1


def test_numpy_global_random_state_does_not_matter():
    model, _ = onnx_builders.lstm()
    np.random.seed(1)
    first = encoder.compress_model(model, qp=-32).bitstream
    np.random.seed(2)
    np.random.random(1000)
    assert encoder.compress_model(model, qp=-32).bitstream == first
