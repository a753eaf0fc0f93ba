"""The standalone decoder runs where jax, flax and optax cannot be imported."""

import subprocess
import sys
import textwrap

import numpy as np
import onnx

import onnx_builders
from nnlc import encoder, onnx_io

BLOCKER = textwrap.dedent("""
    import sys
    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax', 'orbax'):
                raise ImportError(f'{name} is blocked: the standalone decoder must not import it')
            return None
    sys.meta_path.insert(0, _Blocker())
""")


def test_nnlc_decode_runs_without_jax(tmp_path):
    model, feeds = onnx_builders.if_constants()
    bitstream = tmp_path / "model.nnlc"
    bitstream.write_bytes(encoder.compress_model(model, qp=-30).bitstream)
    output = tmp_path / "decoded.onnx"
    script = BLOCKER + textwrap.dedent(f"""
        from nnlc.decoder.__main__ import main
        code = main([{str(bitstream)!r}, '-o', {str(output)!r}, '--quiet'])
        assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')]
        sys.exit(code)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    decoded = onnx.load(str(output))
    onnx.checker.check_model(decoded)
    reference = onnx_io.find_float_tensors(model)
    for name, record in onnx_io.find_float_tensors(decoded).items():
        assert np.max(np.abs(record.array - reference[name].array)) < 2 ** -8


def test_blocker_really_blocks():
    script = BLOCKER + "import jax\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked" in result.stderr


def test_decoder_modules_import_no_framework():
    script = BLOCKER + "import nnlc.decoder, nnlc.decoder.files, nnlc.decoder.quantized_graph, nnlc.decoder.__main__\n"
    subprocess.run([sys.executable, "-c", script], check=True)
