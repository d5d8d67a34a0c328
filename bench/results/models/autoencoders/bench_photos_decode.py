"""Single end-to-end cases, with the functions of `genkernels bench` (budget 0.3 s, 1 thread):
    python bench/results/models/autoencoders/bench_photos_decode.py OUT.json [MODEL:CASE ...]
default: vae:decode_photos (the case the CLI run was stopped before)."""
import json, sys, time
import torch
torch.set_num_threads(1)
from genkernels import benchkit as gb
gb.steady_cpu_allocator()
wanted = sys.argv[2:] or ["vae:decode_photos"]
rows, t = [], time.perf_counter()
for item in wanted:
    model, label = item.split(":")
    case = [c for c in gb.cases(model, "cpu") if c.label.startswith(f"{model} {label}")][0]
    rows += gb.run_case(case, budget_s=0.3)
    print(gb.format_table(rows), flush=True)
json.dump({"command": f"python bench_photos_decode.py OUT.json {' '.join(wanted)} (gb.run_case, budget 0.3 s, 1 thread)",
           "elapsed_s": round(time.perf_counter() - t, 1), "results": rows}, open(sys.argv[1], "w"), indent=1, default=str)
