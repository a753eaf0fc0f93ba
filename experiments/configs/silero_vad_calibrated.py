"""Silero VAD, stateful form with an If on the sample rate (PyPI silero-vad==6.2.3), calibrated stage: per-tensor equal-slope steps + OPTQ from unlabelled calibration inputs
(frames of the train clips with teacher-forced states (fidelity uses the held-out clips)); minutes on a CPU, no training.

    python -m experiments.main --config=experiments/configs/silero_vad_calibrated.py --workdir=/tmp/silero_vad_cal \
        --config.lmbda=1e-9
    python -m experiments.main --config=experiments/configs/silero_vad_calibrated.py:target=transparent ...
    python -m launch.sweep --config=experiments/configs/silero_vad_calibrated.py --workdir=/tmp/silero_vad_cal_sweep
    python -m launch.report /tmp/silero_vad_cal_sweep

Override keys: model=PATH, source=SOURCE (any --calibrate source), method=global|allocation|optq,
target=transparent|kl<=X|..., samples=N. Fidelity (DESIGN.md §6) on the benchmark's held-out inputs.
"""

from experiments.configs._calibrated import shared_model

get_config, sweep = shared_model("silero_vad")
