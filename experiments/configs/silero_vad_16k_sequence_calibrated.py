"""Silero VAD, sequence form (PyPI silero-vad==6.2.3, silero_vad/data/), calibrated stage: per-tensor equal-slope steps + OPTQ from unlabelled calibration inputs
(frames of the train clips of nnlc.data.audio (fidelity uses the held-out clips)); minutes on a CPU, no training.

    python -m experiments.main --config=experiments/configs/silero_vad_16k_sequence_calibrated.py --workdir=/tmp/silero_vad_16k_sequence_cal \
        --config.lmbda=2e-9
    python -m experiments.main --config=experiments/configs/silero_vad_16k_sequence_calibrated.py:target=transparent ...
    python -m launch.sweep --config=experiments/configs/silero_vad_16k_sequence_calibrated.py --workdir=/tmp/silero_vad_16k_sequence_cal_sweep
    python -m launch.report /tmp/silero_vad_16k_sequence_cal_sweep

Override keys: model=PATH, source=SOURCE (any --calibrate source), method=global|allocation|optq,
target=transparent|kl<=X|..., samples=N. Fidelity (DESIGN.md §6) on the benchmark's held-out inputs.
"""

from experiments.configs._calibrated import shared_model

get_config, sweep = shared_model("silero_vad_16k_sequence")
