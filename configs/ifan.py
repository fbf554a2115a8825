"""IFAN as trained in the paper, and its ablations/variants selected by a config argument.

    python train.py --config=configs/ifan.py --workdir=runs/ifan
    python train.py --config=configs/ifan.py:variant=FD --workdir=runs/ifan_FD      # Table 1
    python train.py --config=configs/ifan.py:N=26 --workdir=runs/ifan_N26           # Table 4
    python train.py --config=configs/ifan.py:fac --workdir=runs/ifan_fac            # Table 5
    python train.py --config=configs/ifan.py:dual --workdir=runs/ifan_dual          # dual-pixel input
    python train.py --config=configs/ifan.py:bits=16 --workdir=runs/ifan_16bit      # 16-bit PNG input
    python train.py --config=configs/ifan.py:data=pairs --config.data_dir=ROOT --workdir=W  # own pairs

Arguments (comma separated, big_vision style): `N=<int>` (8, 17, 26, 35, 44), `variant=` one of
baseline, D, F, FD, FR, FDR (Table 1; default FDR = the full model), `fac` (FAC k=11 instead of
IAC), `dual`, `bits=8|16`, `iac=separable|official`, `data=dpdd|pairs` (pairs: your own
blurred/sharp images in ROOT/{train,val,test}/{source,target}, no dual-pixel views, so no
`dual`). Booleans are strict: `fac`, `fac=true`
and `fac=1` turn FAC on, `fac=false` and `fac=0` leave it off, `fac=maybe` is an error. Any key
can still be overridden with `--config.KEY=VALUE`.
"""

import ml_collections

from ifan_jax.config import ConfigArgError, parse_arg
from ifan_jax.data.settings import AUGMENT_DEFAULTS

VARIANTS = ("baseline", "D", "F", "FD", "FR", "FDR")
IAC_VARIANTS = ("separable", "official")
DATA = ("dpdd", "pairs")  # data sets with a training split (ifan_jax.data.layouts)


def model_config(n: int = 17, variant: str = "FDR", fac: bool = False, dual: bool = False,
                 iac: str = "separable") -> ml_collections.ConfigDict:
    """The `model` section: every field of `ifan_jax.models.IFAN`."""
    if variant not in VARIANTS:
        raise ValueError(f"config argument variant={variant!r}: must be one of {VARIANTS}")
    if iac not in IAC_VARIANTS:
        raise ValueError(f"config argument iac={iac!r}: must be one of {IAC_VARIANTS}")
    return ml_collections.ConfigDict(dict(
        channels=32,  # ch; the feature maps at 1/8 have 4 * ch channels
        kernel_size=3,  # of every ordinary convolution
        res_units=2,  # units per residual block in the heads
        num_iterations=n,  # N separable filter sets in F_deblur
        filter_size=3,  # k of the IAC filters
        # "separable": the paper's Eq. 1. "official": the released code's IAC, whose horizontal
        # pass reuses the vertical filter; converted official checkpoints need it.
        iac_variant=iac,
        use_filter_prediction="F" in variant,
        use_disparity="D" in variant,
        use_reblur="R" in variant,
        reblur_iterations=n,
        reblur_filter_size=3,
        dual_pixel_input=dual,
        adaptive_conv="fac" if fac else "iac",
        fac_kernel_size=11,
        remat=False,  # also recompute each part's activations in the backward pass (IAC's always are)
        dtype="float32",  # compute dtype; "bfloat16" = mixed precision (params stay float32)
    ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, N=17, variant="FDR", fac=False, dual=False, bits=8, iac="separable",
                     data="dpdd")
    if args["bits"] not in (8, 16):
        raise ValueError(f"config argument bits={args['bits']}: must be 8 or 16")
    if args["data"] not in DATA:
        raise ConfigArgError(f"config argument data={args['data']!r}: must be one of {DATA}")
    if args["data"] == "pairs" and args["dual"]:
        raise ConfigArgError("config arguments data=pairs and dual: the dual-pixel input needs "
                             "left/right views, which a pairs data set does not have")
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Data: ROOT/DPDD/{train,val,test}_{c,l,r}/source, {split}_c/target (see README); "pairs":
    # ROOT/{train,val,test}/{source,target} (no dual-pixel views: no disparity loss).
    config.data_dir = "datasets"
    config.dataset = args["data"]
    config.bit_depth = args["bits"]
    config.batch_size = 8  # global batch, split over all devices of all hosts
    # Each device's share of the batch in this many forward/backward passes, their gradients
    # averaged: the same update in less memory. On the 2-core CPU 4 is also faster at batch 8
    # (benchmarks/README.md); a GPU is fastest with 1.
    config.microbatches = 1
    config.crop_size = 256
    config.augment = ml_collections.ConfigDict(AUGMENT_DEFAULTS)  # the paper's
    config.num_eval_images = -1  # validation images per evaluation; -1: the whole split
    config.eval_lpips = True  # also LPIPS (AlexNet) in the periodic validation
    config.synthetic = ml_collections.ConfigDict(dict(generate=False, num=0, size=0))
    # Decode the training scenes once into host memory (DPDD: 7.9 GB at 8 bits) instead of
    # decoding four PNGs per example; the stream is the same either way.
    config.cache_train_data = False

    # Optimisation (official trainer): RAdam, global-norm clipping, step decay.
    config.total_steps = 600_000
    config.learning_rate = 1e-4
    config.lr_boundaries = (500_000, 550_000)
    config.lr_decay = 0.5
    config.beta1 = 0.9
    # The paper's text says beta2 = 0.99; the official trainer (and so the released weights) uses
    # 0.999. We follow the code.
    config.beta2 = 0.999
    config.eps = 1e-8
    config.weight_decay = 0.01
    config.grad_clip_norm = 0.5

    # Book-keeping.
    config.log_every_steps = 200
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 5_000
    config.image_summary_every_steps = 10_000
    config.keep_checkpoints = 3
    config.distributed = False  # call jax.distributed.initialize() (several hosts)

    config.model = model_config(args["N"], args["variant"], args["fac"], args["dual"], args["iac"])
    return config
