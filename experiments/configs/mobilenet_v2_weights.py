"""Data-free variant of mobilenet_v2_distill: distortion is the weight-space error (no inputs at all).

    python -m experiments.main --config=experiments/configs/mobilenet_v2_weights.py --workdir=/tmp/mobilenet_v2_weights \\
        --config.lmbda=0.001

Same model file and fidelity evaluation as experiments/configs/mobilenet_v2_distill.py.
"""

from experiments.configs import mobilenet_v2_distill
from experiments.configs._shared_models import data_free, data_free_sweep as sweep  # noqa: F401


def get_config(arg: str | None = None):
    return data_free(mobilenet_v2_distill.get_config(arg))
