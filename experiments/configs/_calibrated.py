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
# shared model: (file in ../shared/models, calibration source, fidelity kind, default lambda, sweep lambdas)
SHARED_MODELS = {
    "mobilenet_v2": ("mobilenet_v2.onnx", "images", "classifier", 1.6e-8, (4e-9, 8e-9, 1.6e-8, 3.2e-8)),
    "silero_vad_16k_sequence": ("silero_vad_16k_sequence.onnx", "audio", "vad", 2e-9, (5e-10, 1e-9, 2e-9, 4e-9)),
    "silero_vad": ("silero_vad.onnx", "audio", "vad_stateful", 1e-9, (3e-10, 6e-10, 1.2e-9, 2.4e-9)),
    "minilm": ("minilm_l6_v2.onnx", "text", "embedding", 6e-10, (1.5e-10, 3e-10, 6e-10, 1.2e-9)),
}


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


def shared_model(name: str):
    """(get_config, sweep) of a shared model's calibrated config (see SHARED_MODELS)."""
    from experiments.configs._shared_models import model_path

    file, source, evaluation, lmbda, lmbdas = SHARED_MODELS[name]

    def get_config(arg: str | None = None):
        return make_config(model_path(file), source, evaluation, lmbda, arg)

    return get_config, sweep_over(lmbdas)
