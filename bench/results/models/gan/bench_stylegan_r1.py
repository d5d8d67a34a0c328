"""The StyleGAN critic step with R1 (case train_step_r1_64) on this CPU, every impl including compile, one run:
    python bench/results/models/gan/bench_stylegan_r1.py OUT.json"""
import json, sys, torch
from genkernels import benchkit as gb
from genkernels.sysinfo import system_info
torch.set_num_threads(1)
case = next(c for c in gb.cases("stylegan", "cpu", quick=False, reference=True) if c.shape == "train_step_r1_64")
rows = gb.run_case(case, budget_s=1.0)
json.dump({"system": system_info("cpu"), "rows": rows}, open(sys.argv[1], "w"), indent=1, default=str)
print(gb.format_table(rows))
