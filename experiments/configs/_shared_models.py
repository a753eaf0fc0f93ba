"""Where the real networks live (../shared/models beside the repository, or NNLC_MODELS_DIR)."""

import os


def model_path(file_name: str) -> str:
    folder = os.environ.get("NNLC_MODELS_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "models")
    return os.path.abspath(os.path.join(folder, file_name))


def parse_arg(arg: str | None) -> dict[str, str]:
    """`key=value,key=value` config arguments as a dict."""
    return dict(item.split("=", 1) for item in arg.split(",") if item) if arg else {}


def data_free(config):
    """The data-free variant of a distill config: weight-space distortion, no inputs at all."""
    config.distortion = "weights"
    config.num_steps = 500
    config.lmbda = 1e-3
    return config


def data_free_sweep(add):
    for lmbda in (1e-4, 3e-4, 1e-3, 3e-3):
        add(lmbda=lmbda)
