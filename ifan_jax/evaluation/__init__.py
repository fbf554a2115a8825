"""Evaluation: scoring deblurred images against ground truth, on a whole test set.

    python evaluate.py --ckpt=IFAN.pytorch --data_dir=datasets --dataset=dpdd --output_dir=results

- `scorer.py`: the scoring core (`Scorer`, the named metrics), shared with training's validation.
- `job.py`: `evaluate`, a test set's scores.csv, summary.json, images and timing.
- `metrics.py`: PSNR, SSIM, MAE as the official evaluation computes them.
- `lpips.py`: LPIPS (AlexNet, v0.1) in JAX.
- `subsets.py`: subset label files (indoor/outdoor scenes).
"""
