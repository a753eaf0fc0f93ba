"""Data-free variant of silero_vad_distill: distortion is the weight-space error (no inputs at all).

    python -m experiments.main --config=experiments/configs/silero_vad_weights.py --workdir=/tmp/silero_vad_weights \\
        --config.lmbda=0.001

Same model file and fidelity evaluation as experiments/configs/silero_vad_distill.py.
"""

from experiments.configs import silero_vad_distill
from experiments.configs._shared_models import data_free, data_free_sweep as sweep  # noqa: F401


def get_config(arg: str | None = None):
    return data_free(silero_vad_distill.get_config(arg))
