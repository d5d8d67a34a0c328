"""The ``genkernels`` command.

    genkernels info                     versions, native modules, backends, device
    genkernels bench [--device cpu|cuda] [--quick] [--out DIR] [--ops group_norm_silu,...]
                                        eager vs torch.compile vs genkernels backends: table, JSON, PNG
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import time
from typing import List, Optional


def _print_info(args) -> int:
    from . import benchmark as gb

    info = gb.system_info()
    print(f"genkernels   {info['genkernels']}")
    print(f"torch        {info['torch']} (CUDA {info['torch_cuda'] or 'none'})")
    print(f"triton       {info['triton']}")
    print(f"python       {info['python']}  {info['platform']}")
    print(f"cpu          {info['cpu']}, {info['cpu_count']} cores, torch threads {info['torch_threads']}")
    print(f"cpu isa      {info['cpu_isa']}  (genkernels._C)")
    archs = info["cuda_archs"]
    archs = ", ".join(f"sm_{a}" for a in archs) if isinstance(archs, list) else archs
    rt = f", CUDA runtime {info['cuda_runtime']}" if info.get("cuda_runtime") else ""
    print(f"cuda archs   {archs}  (genkernels._C_cuda{rt})")
    if info["cuda_available"]:
        print(f"gpu          {info['gpu']} ({info['gpu_capability']}, {info['gpu_memory_gib']} GiB)")
    else:
        print("gpu          none (torch.cuda.is_available() is False)")
    print(f"backends     cpu: {', '.join(info['backends']['cpu'])}")
    print(f"             cuda: {', '.join(info['backends']['cuda']) or 'none'}")
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    return 0


class _Interrupted(Exception):
    pass


def _on_sigterm(signum, frame):  # `timeout` sends SIGTERM: stop, but still write what was measured
    raise _Interrupted()


def _progress(items, desc):
    try:
        from tqdm import tqdm
        return tqdm(items, desc=desc, unit="case", dynamic_ncols=True, file=sys.stderr)
    except ImportError:  # tqdm is optional (extra "bench")
        def gen():
            for i, it in enumerate(items):
                print(f"[{i + 1}/{len(items)}] {it.label}", file=sys.stderr, flush=True)
                yield it
        return gen()


def _write_json(path, meta, rows) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(meta, results=rows), f, indent=1, default=str)
    os.replace(tmp, path)


def _write_png(path, meta, rows) -> Optional[str]:
    """Grouped bars of % of copy bandwidth per case, one panel per (op, pass). Returns an error or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib not importable ({e})"
    ok = [r for r in rows if "error" not in r and r.get("pct_copy") is not None]
    if not ok:
        return "no results to plot"
    panels = []
    for r in ok:
        key = (r.get("op", "?"), r.get("pass", "?"))
        if key not in panels:
            panels.append(key)
    impls = []
    for r in ok:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    ncase = max(len({r["case"] for r in ok if (r.get("op"), r.get("pass")) == p}) for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 0.55 * ncase * len(impls) / 2 + 3), 3.6 * len(panels)),
                             squeeze=False)
    width = 0.8 / len(impls)
    for ax, (op, pass_) in zip(axes[:, 0], panels):
        sel = [r for r in ok if (r.get("op"), r.get("pass")) == (op, pass_)]
        cases = []
        for r in sel:
            if r["case"] not in cases:
                cases.append(r["case"])
        for j, impl in enumerate(impls):
            vals = {r["case"]: r["pct_copy"] for r in sel if r["impl"] == impl}
            xs = [i + (j - (len(impls) - 1) / 2) * width for i in range(len(cases))]
            bars = ax.bar(xs, [vals.get(c, 0.0) for c in cases], width, label=impl)
            for b, c in zip(bars, cases):
                if c in vals:
                    ax.annotate(f"{vals[c]:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=6)
        short = [c.replace(f"{op} ", "").replace(f" {pass_}", "") for c in cases]
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(short, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("% of copy bandwidth")
        ax.axhline(100, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{op} {pass_}", fontsize=9)
        ax.legend(fontsize=7, ncol=len(impls))
    dev = meta["system"].get("gpu") if meta["device"].startswith("cuda") else meta["system"].get("cpu")
    fig.suptitle(f"genkernels {meta['system']['genkernels']}, torch {meta['system']['torch']}, {dev}, "
                 f"{meta['timing']} timing, {meta['date'][:16]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _bench(args) -> int:
    import torch

    from . import benchmark as gb

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("genkernels bench: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else gb.registered_ops()
    unknown = [o for o in ops if o not in gb.registered_ops()]
    if unknown:
        print(f"genkernels bench: no benchmark cases for {unknown}; known: {gb.registered_ops()}", file=sys.stderr)
        return 2
    dtypes = args.dtypes.split(",") if args.dtypes else None
    all_cases = [c for op in ops for c in gb.cases(op, dev, args.quick, args.reference, dtypes)]
    if not all_cases:
        print("genkernels bench: no cases selected", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = gb.steady_cpu_allocator() if dev.type == "cpu" else None
    graphs = bool(args.cuda_graphs and dev.type == "cuda")
    budget = args.budget if args.budget is not None else (
        (0.3 if dev.type == "cuda" else (0.6 if args.quick else 0.8)))
    os.makedirs(args.out, exist_ok=True)
    stem = f"bench_{dev.type}" + ("_graphs" if graphs else "") + ("_quick" if args.quick else "")
    json_path = os.path.join(args.out, stem + ".json")
    png_path = os.path.join(args.out, stem + ".png")
    meta = {"device": str(dev), "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "system": gb.system_info(dev), "ops": ops, "quick": args.quick,
            "timing": "cuda-graph" if graphs else "wall", "budget_s_per_impl": budget,
            "command": " ".join(sys.argv), "cpu_allocator": allocator or "default", "complete": False}
    print(f"genkernels bench: {len(all_cases)} cases on {dev} "
          f"({meta['system'].get('gpu') or meta['system']['cpu']}), impls: {', '.join(all_cases[0].impl_names)}",
          file=sys.stderr)

    rows: List[dict] = []
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    interrupted = False
    t0 = time.perf_counter()
    try:
        for case in _progress(all_cases, "bench"):
            rows.extend(gb.run_case(case, budget_s=budget, graphs=graphs))
            _write_json(json_path, meta, rows)  # after every case: a killed run keeps what it measured
        meta["complete"] = True
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
        print("\ngenkernels bench: interrupted, writing partial results", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, old)
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    _write_json(json_path, meta, rows)
    print(gb.format_table(rows))
    copy_note = "copy = dst.copy_(src) of the case's input size, read+write counted; "
    print(f"\n{copy_note}speedups are median-time ratios within this run; {meta['elapsed_s']} s")
    if allocator:
        print(allocator)
    err = _write_png(png_path, meta, rows)
    print(f"wrote {json_path}" + (f" and {png_path}" if err is None else f" (no PNG: {err})"))
    failed = [r for r in rows if "error" in r]
    if interrupted:
        return 130
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="genkernels", description=__doc__.split("\n")[0].strip("`. "))
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sp = sub.add_parser("info", help="versions, compiled modules, backends, device")
    sp.add_argument("--json", action="store_true", help="also print everything as JSON")
    sp.set_defaults(func=_print_info)
    sp = sub.add_parser("bench", help="benchmark eager vs torch.compile vs genkernels backends")
    sp.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    sp.add_argument("--quick", action="store_true", help="headline case of each op only (first shape and dtype)")
    sp.add_argument("--out", default=os.path.join("bench", "out"), help="where JSON and PNG go (default bench/out)")
    sp.add_argument("--ops", default=None, help="comma-separated ops (default: all registered)")
    sp.add_argument("--dtypes", default=None, help="comma-separated dtypes to keep, e.g. float16,float32")
    sp.add_argument("--reference", action="store_true", help="also time the eager `reference` backend")
    sp.add_argument("--budget", type=float, default=None,
                    help="timed seconds per impl per case (default 0.8 cpu, 0.6 cpu --quick, 0.3 cuda)")
    sp.add_argument("--cuda-graphs", action="store_true",
                    help="time CUDA-graph replays (GPU time without launch/dispatch overhead)")
    sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sp.set_defaults(func=_bench)
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
