"""Shared parts of the calibrated-stage configs (*_calibrated.py): the sweep over method and lambda.

Each config's lambdas bracket its transparent point: the equal-slope allocation predicts a distortion
D = lmbda * N / (2 ln 2) for plain rounding (nnlc/calibrated/allocation.py), so the grid is that
prediction at the kind's transparency budget times powers of 2 (OPTQ passes at larger lambdas).
Methods: "global" (one step for all tensors: the global-qp baseline at the same lambda), "allocation"
(equal-slope per-tensor steps, rounding) and "optq" (the same steps + OPTQ error compensation).
"""

from experiments.configs._shared_models import parse_arg
from nnlc.calibrated.experiment import calibrated_config

METHODS = ("global", "allocation", "optq")


def make_config(model: str, source: str, evaluation: str, lmbda: float, arg: str | None = None):
    """A calibrated config; `arg` overrides as key=value (model=, source=, method=, target=, samples=)."""
    options = parse_arg(arg)
    config = calibrated_config(options.get("model", model), options.get("source", source), evaluation, lmbda)
    if "method" in options:
        config.calibrated.method = options["method"]
    if "target" in options:
        config.target = options["target"]
    if "samples" in options:
        config.calibration.samples = int(options["samples"])
    return config


def sweep_over(lmbdas):
    """A `sweep(add)` over every method at each lambda."""
    def sweep(add):
        for method in METHODS:
            for lmbda in lmbdas:
                add(lmbda=lmbda, **{"calibrated.method": method})
    return sweep
