"""Data-free variant of minilm_distill: distortion is the weight-space error (no inputs at all).

    python -m experiments.main --config=experiments/configs/minilm_weights.py --workdir=/tmp/minilm_weights \
        --config.lmbda=0.001

Same model file and fidelity evaluation as experiments/configs/minilm_distill.py.
"""

from experiments.configs import minilm_distill


def get_config(arg: str | None = None):
    config = minilm_distill.get_config(arg)
    config.distortion = "weights"
    config.num_steps = 500
    config.lmbda = 1e-3
    return config


def sweep(add):
    for lmbda in (1e-4, 3e-4, 1e-3, 3e-3):
        add(lmbda=lmbda)
