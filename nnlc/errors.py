"""Exception types shared by the encoder, the standalone decoder and the CLI.

This module imports nothing but the standard library: the standalone decoder depends on it.
"""


class NnlcError(Exception):
    """Base class of every error nnlc raises on purpose (one line, meant for users)."""


class BitstreamError(NnlcError):
    """A bitstream is malformed, truncated, corrupted, or of an unsupported version.

    The only exception the decoder lets escape on bad input.
    """


class ModelError(NnlcError):
    """An input model is missing, not ONNX, or holds something nnlc cannot handle."""
