"""The vae photos-preset decode case alone (the CLI run was stopped before it), with the functions of
`genkernels bench`: python bench/results/models/autoencoders/bench_photos_decode.py OUT.json"""
import json, sys, time
import torch
torch.set_num_threads(1)
from genkernels import benchmark as gb
gb.steady_cpu_allocator()
case = [c for c in gb.cases("vae", "cpu") if c.label.startswith("vae decode_photos")][0]
t = time.perf_counter()
rows = gb.run_case(case, budget_s=0.3)
json.dump({"command": "python bench_photos_decode.py (gb.run_case of 'vae decode_photos', budget 0.3 s, 1 thread)",
           "elapsed_s": round(time.perf_counter() - t, 1), "results": rows}, open(sys.argv[1], "w"), indent=1, default=str)
print(gb.format_table(rows))
