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

from experiments.configs._calibrated import shared_model

get_config, sweep = shared_model("minilm")
