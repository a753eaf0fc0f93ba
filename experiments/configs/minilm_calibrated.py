"""all-MiniLM-L6-v2 sentence embeddings (see ../shared/models/MANIFEST.md), calibrated stage: per-tensor equal-slope steps + OPTQ from unlabelled calibration inputs
(sentences of the train split of nnlc.data.text, WordPiece vocab beside the model (fidelity uses held-out sentences)); minutes on a CPU, no training.

    python -m experiments.main --config=experiments/configs/minilm_calibrated.py --workdir=/tmp/minilm_cal \
        --config.lmbda=6e-10
    python -m experiments.main --config=experiments/configs/minilm_calibrated.py:target=transparent ...
    python -m launch.sweep --config=experiments/configs/minilm_calibrated.py --workdir=/tmp/minilm_cal_sweep
    python -m launch.report /tmp/minilm_cal_sweep

Override keys: model=PATH, source=SOURCE (any --calibrate source), method=global|allocation|optq,
target=transparent|kl<=X|..., samples=N. Fidelity (DESIGN.md §6) on the benchmark's held-out inputs.
"""

from experiments.configs._calibrated import make_config, sweep_over
from experiments.configs._shared_models import model_path


def get_config(arg: str | None = None):
    return make_config(model_path("minilm_l6_v2.onnx"), "text", "embedding", 6e-10, arg)


sweep = sweep_over((1.5e-10, 3e-10, 6e-10, 1.2e-9))
