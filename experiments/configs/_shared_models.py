"""Where the real networks live (../shared/models beside the repository, or NNLC_MODELS_DIR)."""

import os


def model_path(file_name: str) -> str:
    folder = os.environ.get("NNLC_MODELS_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "models")
    return os.path.abspath(os.path.join(folder, file_name))


def parse_arg(arg: str | None) -> dict[str, str]:
    """`key=value,key=value` config arguments as a dict."""
    return dict(item.split("=", 1) for item in arg.split(",") if item) if arg else {}
