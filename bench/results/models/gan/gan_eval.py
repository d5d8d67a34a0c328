"""Evaluate a trained GAN checkpoint (EMA weights where kept): evaluate() JSON and sample grids."""
import json, os, sys, time, torch
import genkernels.models as gm
from genkernels.train import save_grid
run, dest = sys.argv[1], sys.argv[2]
use_ema = "--no-ema" not in sys.argv[3:]
os.makedirs(dest, exist_ok=True)
m = gm.load(run, ema=use_ema)
t = time.time()
res = m.evaluate("test", 500, torch.Generator().manual_seed(0))
res["eval_seconds"] = round(time.time() - t, 1)
res["weights"] = "ema" if use_ema and m.config.ema_decay else "trained"
g = lambda: torch.Generator().manual_seed(1)
if m.name == "cgan":
    rows = torch.cat([m.generate(10, g(), class_label=k) for k in range(10)])
    save_grid(rows, os.path.join(dest, "samples_by_class.png"), nrow=10)
    acc = {}
    from genkernels import metrics
    for k in range(10):
        acc[k] = metrics.digits_accuracy(m.generate(50, g(), class_label=k), torch.full((50,), k))
    res["digits_accuracy_per_class"] = acc
elif m.name == "stylegan":
    save_grid(m.generate(64, g(), truncation=1.0), os.path.join(dest, "samples_psi1.0.png"))
    save_grid(m.generate(64, g(), truncation=0.7), os.path.join(dest, "samples_psi0.7.png"))
else:
    save_grid(m.generate(64, g()), os.path.join(dest, "samples.png"))
state = json.load(open(os.path.join(run, "state.json")))
res["train_steps"], res["train_seconds"] = state["step"], state["time"]
res["config"] = m.config.to_dict()
json.dump(res, open(os.path.join(dest, "eval.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=1))
