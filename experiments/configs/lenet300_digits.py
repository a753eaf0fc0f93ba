"""LeNet-300-100 (MLP) trained from scratch on scikit-learn digits, then compressed in learned mode.

    python -m experiments.main --config=experiments/configs/lenet300_digits.py --workdir=/tmp/lenet300 \
        --config.lmbda=0.1
    python -m launch.sweep --config=experiments/configs/lenet300_digits.py --workdir=/tmp/lenet300_sweep

Labelled accuracy on the digits test split before and after compression.
"""

from nnlc.training.defaults import base_config


def get_config():
    config = base_config()
    config.model = "zoo:lenet300_digits"
    config.float_train_steps = 300
    config.inputs = "digits"
    config.distortion = "supervised"
    config.num_steps = 1000
    config.batch_size = 64
    config.lmbda = 0.1
    config.learning_rate_decoder = 0.02
    config.log_every = 100
    config.checkpoint_every = 250
    config.evaluation = "digits_accuracy"
    # small networks: biases are a visible share of the bytes, so their steps are learned too
    config.reparam.bias_decoder = "scalar"
    config.reparam.bias_qp = None
    return config


def sweep(add):
    for lmbda in (0.01, 0.03, 0.1, 0.3):
        add(lmbda=lmbda)
