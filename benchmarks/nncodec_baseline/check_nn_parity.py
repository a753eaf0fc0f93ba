"""Check that worker.py's torch-free nnc_core path writes nncodec.nn.encode's exact bitstream.

Runs inside a venv made with ``setup_venv.sh --full`` (torch==2.13.0, torchvision==0.28.0):

    benchmarks/.venv-nncodec/bin/python benchmarks/nncodec_baseline/check_nn_parity.py

``import torchvision`` fails with the CPU torch here ("operator torchvision::nms does not
exist"), and ``nncodec.nn`` imports it only for its training/data helpers, so torchvision is
replaced by a stub module before importing ``nncodec.nn``. Measured (nncodec 2.1.3): identical
bytes and identical decoded arrays at qp -32 and -40 with DQ, and -36 without.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from unittest import mock

import numpy as np


class _StubTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = mock.MagicMock(name=spec.name)
        m.__path__, m.__spec__ = [], spec
        return m

    def exec_module(self, module):
        pass


def main() -> int:
    sys.meta_path.insert(0, _StubTorchvision())
    import nncodec.nn as nn  # noqa: E402

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import worker  # noqa: E402

    rng = np.random.default_rng(1)
    d = {
        "a.weight": rng.laplace(0, 0.02, (300, 200)).astype(np.float32),
        "a.bias": rng.normal(0, 0.1, 300).astype(np.float32),
        "c.weight": rng.normal(0, 0.05, (32, 16, 3, 3)).astype(np.float32),
    }
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for qp, dq in [(-32, True), (-40, True), (-36, False)]:
            args = {"qp": qp, "use_dq": dq, "verbose": False, "results": tmp}
            ref = nn.encode(dict(d), args=args)
            mine, _ = worker.nnc_encode(dict(d), {**worker.DEFAULTS, "qp": qp, "use_dq": dq})
            dec_ref = nn.decode(bytearray(ref), args=args)
            dec = worker.nnc_decode(bytearray(mine))
            same = bytes(ref) == bytes(mine) and all(np.array_equal(dec_ref[k], dec[k]) for k in d)
            ok &= same
            print(f"qp {qp} dq {dq}: nn.encode {len(ref)} B, worker {len(mine)} B, identical={same}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
