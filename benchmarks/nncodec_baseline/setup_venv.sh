#!/usr/bin/env bash
# Create benchmarks/.venv-nncodec: NNCodec 2.1.3 (MPEG NNR reference codec) for the baseline.
#
#   bash benchmarks/nncodec_baseline/setup_venv.sh          # minimal: numpy<2 + nncodec (default)
#   bash benchmarks/nncodec_baseline/setup_venv.sh --full   # also torch/torchvision + nncodec deps
#
# Idempotent: when the venv already imports nncodec.nnc_core 2.1.3 with numpy<2 it only says so.
# Env: PYTHON (default python3; 3.9-3.12, numpy 1.26 has no wheel for newer),
#      NNCODEC_VENV (default <repo>/benchmarks/.venv-nncodec; the runner looks there, or at
#      NNLC_NNCODEC_PYTHON).
# Needs a C++ compiler (g++) and Python headers: nncodec is an sdist that builds its DeepCABAC
# extension with pybind11 (pip fetches setuptools/wheel/pybind11 into an isolated build env).
#
# Why it is NOT in the project venv: nncodec's metadata pins numpy<2 and JAX needs numpy>=2
# (DESIGN.md §8). nnlc talks to it through benchmarks/nncodec_baseline/worker.py in a subprocess.
#
# What was measured (2 shared cores, Python 3.11.7, pip 23.2.1, this machine):
#   python3 -m venv benchmarks/.venv-nncodec                        4.8 s
#   pip install "numpy>=1.26,<2"                                    4.1 s  (numpy 1.26.4)
#   pip install --no-deps nncodec==2.1.3                          103 s  (C++ build; the wheel is
#                                                                          then cached in ~/.cache/pip,
#                                                                          a rebuild of the venv takes ~10 s)
#   -> venv holds only numpy 1.26.4 + nncodec 2.1.3 (no torch). This is the least install that
#      works: nncodec.nnc_core and nncodec.extensions.deepCABAC import without torch, h5py,
#      pandas, etc. (nnc_core imports only numpy + the extension), and worker.py drives them.
#      torch is NOT needed to install with --no-deps: only nncodec's (unused here) nn/nnc/framework
#      modules import torch/torchvision.
#   worker.py's nnc_core path was checked byte-identical to nncodec.nn.encode/decode (qp -32/-40
#   with DQ, -36 without; same bitstream bytes and same decoded arrays) in a --full venv with
#   torchvision stubbed out (see check_nn_parity.py).
#
# --full (not needed by anything here; for check_nn_parity.py):
#   pip install torch==2.13.0 torchvision==0.28.0 "numpy<2" nncodec==2.1.3   77 s (nncodec wheel cached)
#   TRAPS measured: without torchvision pinned, pip resolves torchvision 0.29.x, which pulls
#   torch 2.14.1 and the CUDA 13 stack (nvidia-* wheels, >3 GB) over the CPU torch 2.13.0.
#   With torchvision 0.28.0 the resolve stays on torch-2.13.0+cpu, but `import torchvision`
#   still fails ("operator torchvision::nms does not exist"), so `import nncodec.nn` fails;
#   never install an unpinned torch.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${NNCODEC_VENV:-$repo/benchmarks/.venv-nncodec}"
python="${PYTHON:-python3}"
full=0
for a in "$@"; do
  case "$a" in
    --full) full=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

py="$venv/bin/python"
check() {
  "$py" - <<'EOF' 2>/dev/null
import numpy, nncodec.nnc_core, nncodec.extensions.deepCABAC
from importlib.metadata import version
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
assert version("nncodec") == "2.1.3", version("nncodec")
EOF
}

t0=$SECONDS
if [[ -x "$py" ]] && check; then
  echo "nncodec venv OK at $venv (nothing to do)"
else
  if ! command -v g++ >/dev/null && ! command -v c++ >/dev/null; then
    echo "need a C++ compiler to build nncodec's extension (apt-get install g++)" >&2; exit 1
  fi
  "$python" - <<'EOF' || { echo "need Python 3.9-3.12 for numpy<2 wheels (set PYTHON=...)" >&2; exit 1; }
import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 12), sys.version
EOF
  [[ -x "$py" ]] || "$python" -m venv "$venv"
  "$py" -m pip install --quiet "numpy>=1.26,<2"
  echo "building nncodec==2.1.3 (C++ extension, ~100 s on 2 cores unless the wheel is cached)..."
  "$py" -m pip install --quiet --no-deps nncodec==2.1.3
  check || { echo "nncodec installed but nncodec.nnc_core does not import" >&2; exit 1; }
  echo "nncodec venv ready at $venv ($((SECONDS - t0)) s)"
fi

if [[ $full == 1 ]]; then
  # torch first from the local CPU wheel; torchvision pinned so pip keeps that torch.
  "$py" -m pip install --quiet torch==2.13.0 torchvision==0.28.0 "numpy<2" nncodec==2.1.3
  echo "full install done ($((SECONDS - t0)) s); note: import torchvision (so nncodec.nn) fails with torch 2.13.0 CPU"
fi

# smoke test: encode + decode a tiny dict through the worker
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp" <<'EOF'
import json, sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
np.savez(f"{d}/in.npz", arr_0=rng.normal(0, 0.05, (64, 32)).astype(np.float32),
         arr_1=np.float32(2.0) * np.ones((), np.float32))
json.dump({"names": ["w", "s"], "qp": -32}, open(f"{d}/args.json", "w"))
EOF
(cd "$tmp" && "$py" "$here/worker.py" in.npz args.json out)
"$py" -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['ok'] and r['bitstream_bytes']>0, r; print('smoke test: %d bitstream bytes, %d raw bytes' % (r['bitstream_bytes'], r['raw_bytes']))" "$tmp/out/result.json"
