"""The README figure of the three autoencoders: held-out digits, the bicubic baselines and the
reconstructions of the trained checkpoints, plus samples of the VAE's prior.

    python bench/results/models/autoencoders/autoencoders_grid.py RUNS_DIR OUT_DIR

RUNS_DIR holds the `genkernels train` directories autoencoder/, vae/, vqvae/ (EMA weights where present).
Rows of autoencoders.png: 16 test digits; bicubic through 30 numbers; autoencoder (32 latent numbers);
vae (posterior mean, 32 numbers); bicubic through 16 numbers; vqvae (16 code indices). Images are
enlarged 4x (nearest) so that 16 px digits are visible.
"""
import os
import sys

import torch
import torch.nn.functional as F

from genkernels import data, models
from genkernels.models.autoencoder import bicubic_baseline
from genkernels.train import save_grid


def main(runs: str, out: str) -> None:
    ms = {name: models.load(os.path.join(runs, name)) for name in ("autoencoder", "vae", "vqvae")}
    x = data.load("digits", "test", ms["autoencoder"].config.image_size)["image"][:16]
    with torch.no_grad():
        rows = [x, bicubic_baseline(x, ms["autoencoder"].latent_numbers)[0],
                ms["autoencoder"].reconstruct(x), ms["vae"].reconstruct(x),
                bicubic_baseline(x, ms["vqvae"].latent_numbers)[0], ms["vqvae"].reconstruct(x)]
        samples = ms["vae"].generate(64, torch.Generator().manual_seed(0))
    big = lambda t: F.interpolate(t.clamp(-1, 1), scale_factor=4, mode="nearest")  # noqa: E731
    save_grid(big(torch.cat(rows)), os.path.join(out, "autoencoders.png"), nrow=16)
    save_grid(big(samples), os.path.join(out, "vae_prior_samples.png"), nrow=16)


if __name__ == "__main__":
    main(*sys.argv[1:3])
