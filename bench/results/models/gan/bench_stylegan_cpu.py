"""StyleGAN end-to-end cases on this CPU without the compile impl (its warm-up compile alone is minutes here)."""
import json, sys, torch
from genkernels import benchkit as gb
from genkernels.sysinfo import system_info
rows = []
for c in gb.cases("stylegan", "cpu", quick=False, reference=True):
    names = [n for n in c.impl_names if n != "compile"]
    r = gb.run_case(c, budget_s=1.0, names=names)
    rows += r
    print(gb.format_table(r), flush=True)
json.dump({"system": system_info("cpu"), "rows": rows}, open(sys.argv[1], "w"), indent=1, default=str)
print(gb.format_table(rows))
