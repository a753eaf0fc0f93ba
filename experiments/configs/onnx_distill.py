"""Any ONNX network in learned mode, without writing a config:

    python -m experiments.main \
        --config=experiments/configs/onnx_distill.py:model=/path/to/model.onnx,inputs=images \
        --workdir=/tmp/my_model --config.lmbda=0.01

`inputs` is images (224x224 ImageNet-normalised crops), audio (Silero-style frames), text (WordPiece
tokens for BERT-like inputs input_ids/attention_mask/token_type_ids) or gaussian (standard normal values
for every float input; unknown dimensions get `gaussian_dim`). Optional `eval=classifier|vad|embedding|
auto|none` picks the fidelity measure (default: auto for images/audio/text, none for gaussian), and
`loss=kl|mse` the distillation loss (default: kl for images, mse otherwise).
"""

from experiments.configs._shared_models import parse_arg
from nnlc.training.defaults import base_config


def get_config(arg: str | None = None):
    options = parse_arg(arg)
    if "model" not in options:
        raise ValueError("give the model: --config=experiments/configs/onnx_distill.py:model=PATH,inputs=KIND")
    inputs = options.get("inputs", "gaussian")
    config = base_config()
    config.model = options["model"]
    config.inputs = inputs
    config.distortion = "distill"
    config.distill_loss = options.get("loss", "kl" if inputs == "images" else "mse")
    config.batch_size = int(options.get("batch_size", 16))
    if inputs == "audio":  # rows are the frames of one sequence: no gradient groups (defaults.py)
        config.gradient_groups = 0
    config.num_steps = 1000
    config.lmbda = 0.01
    config.learning_rate_decoder = 0.01
    config.log_every = 50
    config.checkpoint_every = 100
    config.evaluation = options.get("eval", "none" if inputs == "gaussian" else "auto")
    return config


def sweep(add):
    for lmbda in (0.003, 0.01, 0.03, 0.1):
        add(lmbda=lmbda)
