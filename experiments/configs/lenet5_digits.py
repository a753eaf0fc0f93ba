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
