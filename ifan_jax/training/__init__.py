"""Training: the loop, the pure step, the optimiser, the losses, and what runs them on devices.

    from ifan_jax.training import loop
    loop.train_and_evaluate(config, workdir)      # what `python train.py` runs

- `loop.py`: `train_and_evaluate` (config checks, checkpoints, validation, pre-emption).
- `step.py`: `TrainState`, the pure `train_step`, `compile_train_step` for a device mesh.
- `losses.py`: the deblurring, disparity and reblurring losses.
- `optimizer.py`: clipping, RAdam with weight decay, the step schedule (optax).
- `distributed.py`: `jax.distributed` set-up, the device mesh, the global batch, pre-emption.
- `validation.py`: validation during training (over hosts) and TensorBoard images.
- `console.py`: the training console (interval lines, live line, ETA).
"""
