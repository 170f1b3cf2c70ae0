"""Evaluation: full-reference metrics (PSNR, SSIM); the benchmark runner and reports build on them."""

from converge.eval.metrics import psnr, ssim

__all__ = ["psnr", "ssim"]
