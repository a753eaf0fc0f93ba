"""LeNet-300-100 (MLP) trained from scratch on scikit-learn digits, then compressed in learned mode.

    python -m experiments.main --config=experiments/configs/lenet300_digits.py --workdir=/tmp/lenet300 \
        --config.lmbda=0.1
    python -m launch.sweep --config=experiments/configs/lenet300_digits.py --workdir=/tmp/lenet300_sweep

Everything but the network as in lenet5_digits; labelled accuracy on the digits test split.
"""

from experiments.configs import lenet5_digits


def get_config():
    config = lenet5_digits.get_config()
    config.model = "zoo:lenet300_digits"
    config.float_train_steps = 300
    return config


def sweep(add):
    for lmbda in (0.01, 0.03, 0.1, 0.3):
        add(lmbda=lmbda)
