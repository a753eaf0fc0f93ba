"""Defaults of a learned-compression run; experiment configs start from `base_config()`."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = "zoo:lenet5_digits"  # an ONNX path, or zoo:lenet5_digits (trained here first)
    config.float_train_steps = 400  # zoo models only
    config.inputs = "digits"  # digits | images | audio | text | gaussian (nnlc.training.data)
    config.distortion = "supervised"  # supervised | distill | weights
    config.distill_loss = "kl"  # kl (classifier outputs) | mse
    config.output_name = ""  # which graph output the distortion uses ('' = the first)
    config.lmbda = 0.01  # loss = distortion + lmbda * bits per parameter
    config.num_steps = 300
    config.batch_size = 64  # the global batch, split over all devices (and hosts)
    # the batch is cut into this many groups whose gradients are summed in a fixed order, so 1, 2, 4
    # or 8 devices train bit-identically (nnlc/training/step.py); must divide batch_size, and the
    # device count must divide it; 0: plain batch mean (needed when rows are not independent examples)
    config.gradient_groups = 8
    config.seed = 0
    config.latent_units = "step_scaled"  # step_scaled (latents shrink as steps grow) | bins (EPR's free latents)
    config.learning_rate_latents = 0.05  # latents are in units of quantization bins (of the initial step)
    config.learning_rate_decoder = 1e-2  # log-steps
    config.learning_rate_entropy = 1e-2
    config.entropy_warmup_steps = 300  # fit the entropy models to the initial latents before training
    config.entropy_model = "deep_factorized"  # deep_factorized | laplace | logistic
    config.coding_tables = "fitted"  # fitted (to the final latents, smallest) | learned (the entropy models')
    config.final_rounding = "nearest"  # nearest (the trained forward pass) | rdo (rate-distortion optimised)
    config.rdo_tradeoff = 0.1  # rdo: squared error (in bins) traded per bit
    config.fixed_qp = -75  # step of tensors that are not trained (biases, normalisation)
    config.log_every = 25
    config.checkpoint_every = 100
    config.evaluation = "none"  # none | digits_accuracy | classifier | vad | vad_stateful | embedding
    config.evaluation_options = ml_collections.ConfigDict()
    config.distributed = False  # multi-host: call jax.distributed.initialize()
    # a calibrated / block-wise workdir's start.npz: train from that point (scalar decoders; nnlc.training.start)
    config.start_from = ""
    config.reparam = ml_collections.ConfigDict({
        "conv_decoder": "dct",  # dct | channel | scalar, for k x k (k > 1) conv kernels
        "dense_decoder": "channel",  # channel | scalar, for dense, embedding, recurrent, 1x1 conv
        "bias_decoder": "fixed",  # fixed (coded at fixed_qp, not trained) | scalar
        "share_entropy_model": "tensor",  # tensor | role | global
        "init_qp": -32,  # initial step of every decoder (NNR qp)
    })
    return config
