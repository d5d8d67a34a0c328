"""DDIM sampling of the DDPM-trained UNet (same weights, no retraining): FD-digits / KID at several step
counts. Usage: python ddim_from_ddpm.py RUN_DIR OUT_JSON [steps ...]"""
import json
import sys

import torch

from genkernels import models
from genkernels.models.ddim import DDIM, DDIMConfig

run, out = sys.argv[1], sys.argv[2]
steps = [int(s) for s in sys.argv[3:]] or [50, 20]
ddpm = models.load(run)
report = {"run": run}
for n in steps:
    ddim = DDIM(DDIMConfig(**dict(ddpm.config.to_dict(), sample_steps=n))).eval()
    ddim.load_state_dict(ddpm.state_dict())
    report[f"ddim_{n}_steps"] = ddim.evaluate("test", 500, torch.Generator().manual_seed(0))
    print(n, json.dumps(report[f"ddim_{n}_steps"]), flush=True)
json.dump(report, open(out, "w"), indent=1)
