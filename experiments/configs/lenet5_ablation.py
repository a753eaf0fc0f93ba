"""Ablation of the learned mode on LeNet-5/digits: reparameterization, entropy model, data mode, rounding.

    python -m launch.sweep --config=experiments/configs/lenet5_ablation.py --workdir=/tmp/lenet5_ablation \
        --max_parallel=2
    python -m launch.report /tmp/lenet5_ablation --output=/tmp/lenet5_ablation/report

Every variant changes one thing from the base (DCT conv kernels + per-channel dense decoders, deep
factorized densities, supervised loss, nearest rounding) and is run at three lambdas; the report
interpolates each variant's size at matched accuracy. `reparam none` keeps every step fixed at its
initial value (latents are trained, decoders are not): quantization-aware training with an entropy
penalty, no learned reparameterization.
"""

from experiments.configs import lenet5_digits

LAMBDAS = (0.03, 0.1, 0.3)
VARIANTS = {
    "base": {},
    "reparam_scalar": {"reparam.conv_decoder": "scalar", "reparam.dense_decoder": "scalar"},
    "reparam_none": {"reparam.conv_decoder": "scalar", "reparam.dense_decoder": "scalar",
                     "learning_rate_decoder": 0.0},
    "entropy_laplace": {"entropy_model": "laplace"},
    "entropy_logistic": {"entropy_model": "logistic"},
    "data_distill": {"distortion": "distill"},
    "data_weights": {"distortion": "weights"},
    "rounding_rdo": {"final_rounding": "rdo"},
}
WEIGHT_SPACE_LAMBDAS = (1e-4, 3e-4, 1e-3)  # the weights-mode distortion is a relative weight MSE


def get_config():
    config = lenet5_digits.get_config()
    config.num_steps = 600
    config.log_every = 100
    config.checkpoint_every = 300
    return config


def sweep(add):
    for name, changes in VARIANTS.items():
        lambdas = WEIGHT_SPACE_LAMBDAS if changes.get("distortion") == "weights" else LAMBDAS
        for lmbda in lambdas:
            add(lmbda=lmbda, **changes)
