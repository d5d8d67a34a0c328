"""The first stage of a trained ldm run, evaluated alone: reconstruction PSNR / MSE and FD-digits of the
reconstructions of the held-out digits (what the decoder allows the latent diffusion to reach), as JSON.

    python bench/results/models/ldm/first_stage_eval.py RUN OUT.json [NUM]
"""
import json
import sys

import torch

from genkernels import models

run, out = sys.argv[1], sys.argv[2]
num = int(sys.argv[3]) if len(sys.argv) > 3 else 500
ldm = models.load(run)
report = ldm.vae.evaluate("test", num, torch.Generator().manual_seed(0))
report["latent_scale"] = float(ldm.latent_scale)
text = json.dumps(report, indent=1, default=float)
open(out, "w").write(text + "\n")
print(text)
