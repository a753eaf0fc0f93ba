"""LeNet-5-style CNN trained from scratch on scikit-learn digits, then compressed in learned mode.

    python -m experiments.main --config=experiments/configs/lenet5_digits.py --workdir=/tmp/lenet5 \
        --config.lmbda=0.05
    python -m launch.sweep --config=experiments/configs/lenet5_digits.py --workdir=/tmp/lenet5_sweep

Labelled accuracy on the digits test split before and after compression.
"""

from nnlc.training.defaults import base_config


def get_config():
    config = base_config()
    config.model = "zoo:lenet5_digits"
    config.float_train_steps = 400
    config.inputs = "digits"
    config.distortion = "supervised"
    config.num_steps = 400
    config.batch_size = 64
    config.lmbda = 0.05
    config.evaluation = "digits_accuracy"
    return config


def sweep(add):
    for lmbda in (0.01, 0.03, 0.1, 0.3):
        add(lmbda=lmbda)
