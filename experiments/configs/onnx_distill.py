"""Any ONNX network in learned mode, without writing a config:

    python -m experiments.main \
        --config=experiments/configs/onnx_distill.py:model=/path/to/model.onnx,inputs=images \
        --workdir=/tmp/my_model --config.lmbda=0.01

`inputs` is images (224x224 ImageNet-normalised crops), audio (Silero-style frames), text (WordPiece
tokens for BERT-like inputs input_ids/attention_mask/token_type_ids) or gaussian (standard normal values
for every float input; unknown dimensions get `gaussian_dim`). Optional `eval=classifier|vad|embedding|
auto|none` picks the fidelity measure (default: auto for images/audio/text, none for gaussian), and
`loss=kl|mse` the distillation loss (default: kl for images, mse otherwise).

The calibrated and block-wise stages take the CLI's calibration options instead (no training):

    python -m experiments.main --workdir=/tmp/my_model_bw --config=experiments/configs/onnx_distill.py:\
model=/path/to/model.onnx,calibrate=images,stages=blockwise,image_mean=0.498;0.498;0.498,\
image_std=0.502;0.502;0.502,target=transparent

(`calibrate=` any `nnlc compress --calibrate` source; `lmbda=X` instead of a target; `eval=` the
fidelity kind on the benchmark inputs, default auto.)

`stages=blockwise+end_to_end` (or `calibrated+end_to_end`) runs that stage in WORKDIR/blockwise, then
the end-to-end trainer from its steps and integers (scalar decoders; `lmbda` is then the trainer's,
`start_lmbda` or `target` the start's; `num_steps`, `learning_rate_latents`, `inputs` as above).
"""

from experiments.configs._shared_models import parse_arg
from nnlc.training.defaults import base_config

# keys of the calibrated / block-wise stages (stages=calibrated|blockwise), as on the nnlc CLI
CALIBRATION_KEYS = ("samples", "holdout_fraction", "seed", "image_size", "image_mean", "image_std", "layout",
                    "sample_rate", "tokenizer", "max_length")


def calibrated_stages_config(options: dict):
    """`stages=calibrated|blockwise`: any ONNX file with the calibration options of the CLI.

    List values inside the config argument are separated by ';' (image_mean=0.5;0.5;0.5).
    """
    from nnlc.calibrated.experiment import calibrated_config

    config = calibrated_config(options["model"], options.get("calibrate", "gaussian"), options.get("eval", "auto"),
                               float(options.get("lmbda", 1e-8)))
    config.stages = options["stages"]
    config.target = options.get("target", "" if "lmbda" in options else "transparent")
    for key in CALIBRATION_KEYS:
        if key in options:
            current = config.calibration[key]
            config.calibration[key] = type(current)(options[key]) if not isinstance(current, str) else options[key]
    if "method" in options:
        config.calibrated.method = options["method"]
    if config.evaluation == "auto" and config.calibration.source == "gaussian":
        config.evaluation = "none"
    return config


def chained_config(options: dict):
    """`stages=calibrated+end_to_end|blockwise+end_to_end`: the trainer's config (scalar decoders, so
    it can hold the start's steps and integers exactly) plus the calibrated stage's keys; the start
    searches `target` (default transparent) or uses `start_lmbda`; `inputs` (the trainer's data)
    defaults to the calibration source when that is a built-in one (images, audio, text, gaussian)."""
    start_options = {key: value for key, value in options.items() if key not in ("lmbda", "start_lmbda")}
    if "start_lmbda" in options:  # the start's lambda (the trainer's is `lmbda`)
        start_options["lmbda"] = options["start_lmbda"]
    start = calibrated_stages_config({**start_options, "stages": options["stages"].partition("+")[0]})
    source = start.calibration.source
    config = trainer_config({**options, "inputs": options.get(
        "inputs", source if source in ("images", "audio", "text", "gaussian") else "gaussian")})
    config.stages = options["stages"]
    for key in ("calibration", "calibrated", "blockwise", "target"):
        config[key] = start[key]
    config.start_lmbda = float(options.get("start_lmbda", 1e-8))
    if "lmbda" in options:
        config.lmbda = float(options["lmbda"])
    config.reparam.conv_decoder = config.reparam.dense_decoder = config.reparam.bias_decoder = "scalar"
    config.learning_rate_latents = float(options.get("learning_rate_latents", 0.01))
    config.num_steps = int(options.get("num_steps", 300))
    return config


def get_config(arg: str | None = None):
    options = parse_arg(arg)
    if "model" not in options:
        raise ValueError("give the model: --config=experiments/configs/onnx_distill.py:model=PATH,inputs=KIND")
    if options.get("stages") in ("calibrated", "blockwise"):
        return calibrated_stages_config(options)
    if options.get("stages") in ("calibrated+end_to_end", "blockwise+end_to_end"):
        return chained_config(options)
    if options.get("stages", "end_to_end") != "end_to_end":
        raise ValueError(f"stages={options['stages']}: calibrated, blockwise, calibrated+end_to_end, "
                         "blockwise+end_to_end or end_to_end")
    return trainer_config(options)


def trainer_config(options: dict):
    """The end-to-end trainer on any ONNX file (stages=end_to_end, the default)."""
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
