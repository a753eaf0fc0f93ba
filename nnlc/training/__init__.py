"""Rate-distortion training of learned-mode compression (Oktay et al., ICLR 2020) and its final encode.

`problem.py` sets up an ONNX model for training, `step.py` holds the pure jitted train step,
`loop.py` the loop (checkpoints, metrics, resume), `final_encode.py` the bitstream.
"""
