"""Evaluate a trained cfg run with DDIM at a given number of steps: FD-digits / KID at the config's guidance
and the in-repo classifier's accuracy at guidance 1, 3, 5. Usage: python cfg_eval.py RUN_DIR OUT_JSON STEPS [NUM]"""
import json
import sys

import torch

from genkernels import models

run, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
num = int(sys.argv[4]) if len(sys.argv) > 4 else 500
model = models.load(run)
model.config.sample_steps = steps
report = {"run": run, "sample_steps": steps, "num": num,
          "metrics": model.evaluate("test", num, torch.Generator().manual_seed(0), guidances=(1.0, 3.0, 5.0))}
print(json.dumps(report, indent=1))
json.dump(report, open(out, "w"), indent=1)
