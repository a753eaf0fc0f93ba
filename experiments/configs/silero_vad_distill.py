"""Silero VAD (Conv1d + LSTM, ../shared/models/silero_vad_16k_sequence.onnx) in distill mode: the original
speech probabilities on unlabelled audio frames are the targets.

    python -m experiments.main --config=experiments/configs/silero_vad_distill.py --workdir=/tmp/silero \
        --config.lmbda=0.01

The model comes from PyPI `silero-vad==6.2.3` (silero_vad/data/); audio from ../shared/data/audio (or
NNLC_AUDIO_DIR; synthetic clips when absent). Fidelity: decision agreement and mean abs difference.
"""

from experiments.configs._shared_models import model_path, parse_arg
from nnlc.training.defaults import base_config


def get_config(arg: str | None = None):
    options = parse_arg(arg)
    config = base_config()
    config.model = options.get("model", model_path("silero_vad_16k_sequence.onnx"))
    config.inputs = "audio"
    config.distortion = "distill"
    config.distill_loss = "mse"
    config.output_name = "speech_probs"
    config.batch_size = 64  # 64 consecutive frames of one clip, the LSTM state running through them
    config.gradient_groups = 0  # so no gradient groups: not bit-identical across device counts
    config.num_steps = 1000
    config.lmbda = 0.01
    config.learning_rate_decoder = 0.01
    config.log_every = 50
    config.checkpoint_every = 200
    config.reparam.init_qp = -36
    # one density per role (not per tensor): far smaller programs to compile; per-tensor steps
    # still scale each tensor's latents, and the final encode fits a table per tensor anyway
    config.reparam.share_entropy_model = "role"
    config.evaluation = "vad"
    return config


def sweep(add):
    for lmbda in (0.003, 0.01, 0.03, 0.1):
        add(lmbda=lmbda)
