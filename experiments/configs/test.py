"""Tiny config for the tests: LeNet on digits, a few steps.

    python -m experiments.main --config=experiments/configs/test.py --workdir=/tmp/nnlc-test
"""

from nnlc.training.defaults import base_config


def get_config():
    config = base_config()
    config.model = "zoo:lenet5_digits"
    config.float_train_steps = 150
    config.num_steps = 30
    config.batch_size = 32
    config.log_every = 10
    config.checkpoint_every = 10
    config.lmbda = 0.05
    config.entropy_warmup_steps = 0  # keeps the test fast (compiling the warmup dominates at this size)
    config.evaluation = "digits_accuracy"
    return config


def sweep(add):
    for lmbda in (0.02, 0.2):
        add(lmbda=lmbda)
