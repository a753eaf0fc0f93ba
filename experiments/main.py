"""Learned compression of one model at one rate point (a thin absl main).

    python -m experiments.main --config=experiments/configs/lenet5_digits.py --workdir=/tmp/lenet \
        --config.lmbda=0.02

Re-running a finished workdir does nothing; an interrupted one resumes from its last checkpoint.
Configs with `stages = "calibrated"` (experiments/configs/*_calibrated.py) run the calibrated stage
(nnlc.calibrated: equal-slope steps + OPTQ from calibration inputs, minutes on a CPU) instead;
"blockwise" adds block-wise training; "calibrated+end_to_end" / "blockwise+end_to_end" then train
end to end from that point (nnlc.calibrated.experiment.run_stages).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/configs/NAME.py[:ARG]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, bitstream and result.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    result_path = os.path.join(FLAGS.workdir, "result.json")
    if os.path.exists(result_path):
        print(f"{FLAGS.workdir} is finished: {result_path}")
        return
    if FLAGS.config.get("stages", "end_to_end") != "end_to_end":
        from nnlc.calibrated.experiment import run_stages

        result = run_stages(FLAGS.config, FLAGS.workdir)
    else:
        from nnlc.training.loop import train_and_evaluate

        result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=1, default=float))


if __name__ == "__main__":
    app.run(main)
