"""A small IFAN trained on a synthetic dual-pixel data set: minutes on a laptop CPU, no download.

    python train.py --config=configs/quickstart.py --workdir=runs/quickstart

On first use the synthetic set (`ifan_jax.data.synth`: sharp photos shipped with scikit-image,
blurred with a thin-lens defocus model into DPDD's layout, with left/right dual-pixel views) is
written to WORKDIR/data. The model is the paper's architecture at a quarter of its width and with
fewer IAC iterations; the optimiser is the paper's with a larger learning rate and an earlier
decay. Validation PSNR starts just below the blurred input's (the network begins near the
identity) and ends above it.
"""

import ml_collections

from ifan_jax.config import ConfigArgError, sibling

ifan = sibling(__file__, "ifan")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The quickstart; `arg` is passed to configs/ifan.py (e.g. `quickstart.py:variant=FD`)."""
    config = ifan.get_config(arg)
    if config.dataset != "dpdd":
        raise ConfigArgError(f"config argument data={config.dataset}: the quickstart trains on its "
                             f"own synthetic DPDD set; for your pairs use configs/ifan.py:data="
                             f"{config.dataset} --config.data_dir=ROOT")

    config.data_dir = "{workdir}/data"  # inside the workdir
    config.synthetic.generate = True
    config.synthetic.num = 32  # training scenes; validation and test get num // 4 each
    config.synthetic.size = 128
    config.cache_train_data = True  # 32 small scenes: decode them once
    config.crop_size = 64
    config.batch_size = 4
    config.num_eval_images = -1

    config.total_steps = 2000
    config.learning_rate = 1e-3
    config.lr_boundaries = (1600, 1800)

    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 500
    config.image_summary_every_steps = 500
    config.keep_checkpoints = 2

    config.model.channels = 8
    config.model.num_iterations = 5
    config.model.reblur_iterations = 5
    return config
