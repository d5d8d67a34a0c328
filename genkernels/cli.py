"""The ``genkernels`` command.

    genkernels info                     versions, native modules, backends, device
    genkernels bench [--device cpu|cuda] [--quick] [--out DIR] [--ops group_norm_silu,...]
                                        eager vs torch.compile vs genkernels backends: table, JSON, PNG
    genkernels models                   the models of genkernels.models, with their presets
    genkernels train MODEL [--preset P] [--steps N] [--batch-size B] [--lr LR] [--out DIR] [--resume]
                     [--seed S] [--device D] [--backend B] [--set key=value ...]
    genkernels sample MODEL --checkpoint DIR [--num N] [--seed S] [--out FILE.png] [model's options]
    genkernels eval MODEL --checkpoint DIR [--split test] [--num N] [--seed S]      metrics as JSON

Bad input (unknown model, preset or config key, a missing, damaged or foreign checkpoint) ends with one
line on stderr and exit status 2; a good checkpoint is never overwritten.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional


def _print_info(args) -> int:
    from . import _native
    from .sysinfo import system_info

    info = system_info()
    print(f"genkernels   {info['genkernels']}")
    print(f"torch        {info['torch']} (CUDA {info['torch_cuda'] or 'none'})")
    print(f"triton       {info['triton']}")
    print(f"python       {info['python']}  {info['platform']}")
    print(f"cpu          {info['cpu']}, {info['cpu_count']} cores, torch threads {info['torch_threads']}")
    print(f"cpu isa      {info['cpu_isa']}  (genkernels._C)")
    archs = info["cuda_archs"]
    archs = ", ".join(f"sm_{a}" for a in archs) if isinstance(archs, list) else archs
    print(f"cuda archs   {archs}  (genkernels._C_cuda)")
    driver = info["cuda_driver"]
    driver = "none found (no libcuda)" if driver == "none" else f"{driver} (the CUDA version the installed driver supports)"
    print(f"cuda         runtime {info['cuda_runtime']} (linked into genkernels._C_cuda), driver {driver}")
    for name in ("_C", "_C_cuda"):  # which files: a tree whose build failed shows what it lacks
        mod = _native.load(name)
        where = mod.__file__ if mod is not None else f"not loaded: {_native.load_error(name)}"
        print(f"{'modules' if name == '_C' else '':12} genkernels.{name}: {where}")
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


def _bench(args) -> int:
    import torch

    from . import benchkit as gb
    from .sysinfo import system_info

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
            "system": system_info(dev), "ops": ops, "quick": args.quick,
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
    # the compute roofline, one matmul measurement per dtype in this run
    meta["matmul_gflops"] = {r["dtype"]: r["flop_gflops"] for r in rows if r.get("flop_gflops")}
    _write_json(json_path, meta, rows)
    print(gb.format_table(rows))
    print("\ncopy = dst.copy_(src) of the case's input size, read+write counted; %roof = the larger of "
          "bytes at copy bandwidth and (mm) FLOPs at the matmul rate "
          f"{meta['matmul_gflops'] or '-'} GFLOP/s, over the time; speedups are median-time ratios "
          f"within this run [in brackets: the median of the ratios within each round]; {meta['elapsed_s']} s")
    if allocator:
        print(allocator)
    err = gb.write_chart(png_path, meta, rows)
    print(f"wrote {json_path}" + (f" and {png_path}" if err is None else f" (no PNG: {err})"))
    failed = [r for r in rows if "error" in r]
    if interrupted:
        return 130
    return 1 if failed else 0


# ---------------------------------------------------------------- model commands
class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, not the usage block
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class _BadInput(Exception):
    pass


def _parse_value(text: str) -> Any:
    import ast
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _overrides(name: str, pairs: List[str]) -> Dict[str, Any]:
    """`--set key=value` pairs, each value converted to the type of the field's default."""
    import dataclasses

    from . import models

    fields = {f.name: f for f in dataclasses.fields(models.model_class(name).Config)}
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise _BadInput(f"--set expects key=value, got {pair!r}")
        if key not in fields:
            raise _BadInput(f"model {name!r} has no config key {key!r}; keys: {', '.join(fields)}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        val = _parse_value(text)
        if isinstance(default, bool) or default is None or val is None:
            ok = default is None or val is None or isinstance(val, bool)
        elif isinstance(default, int):
            ok = isinstance(val, int) and not isinstance(val, bool)
        elif isinstance(default, float):
            ok = isinstance(val, (int, float)) and not isinstance(val, bool)
            val = float(val) if ok else val
        elif isinstance(default, (tuple, list)):
            ok = isinstance(val, (tuple, list))
            val = type(default)(val) if ok else val
        elif isinstance(default, str):
            ok, val = True, text
        else:
            ok = True
        if not ok:
            raise _BadInput(f"--set {key}: expected {type(default).__name__}, got {text!r}")
        out[key] = val
    return out


def _default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _models(args) -> int:
    from . import models

    for name in models.names():
        try:
            cls = models.model_class(name)
            print(f"{name:<14} {cls.description}  [presets: {', '.join(cls.presets)}]")
        except Exception as e:  # a model whose module does not import must not hide the others
            print(f"{name:<14} (cannot be imported: {type(e).__name__}: {e})")
    return 0


def _train(args) -> int:
    import torch

    import genkernels

    from . import checkpoint, models, train

    genkernels.use_backend(args.backend)
    out = args.out or os.path.join("runs", args.model)
    overrides = _overrides(args.model, args.set)
    if args.resume:
        ck = checkpoint.read(out)
        if ck.model != args.model:
            raise _BadInput(f"{out} holds a checkpoint of model {ck.model!r}, not {args.model!r}")
        if args.preset is not None and args.preset != ck.preset:
            raise _BadInput(f"{out} was trained with preset {ck.preset!r}, not {args.preset!r}")
        cls = models.model_class(args.model)
        config = checkpoint.config_from_dict(cls, ck.config)
        for k, v in overrides.items():   # fit refuses any that differ from the checkpoint
            setattr(config, k, v)
        model = cls(config)
        model.preset = ck.preset
    else:
        torch.manual_seed(args.seed)
        model = models.build(args.model, args.preset or "digits", **overrides)
    result = train.fit(model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, out=out,
                       resume=args.resume, seed=args.seed, device=args.device or _default_device(),
                       log_every=args.log_every, sample_every=args.sample_every, ckpt_every=args.ckpt_every,
                       progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        logs = ", ".join(f"{k} {v:.4g}" for k, v in result["logs"].items())
        print(f"{args.model}: step {result['step']} ({logs}); checkpoint in {out}")
    return 0


def _load_for_inference(args):
    import torch

    import genkernels

    from . import models

    genkernels.use_backend(args.backend)
    models.model_class(args.model)                       # an unknown model is named as such
    device = args.device or _default_device()
    if getattr(args, "from_pretrained", None):   # a model's sample option: real weights from a local folder
        model = models.model_class(args.model).from_pretrained(args.from_pretrained).to(device)
    elif not args.checkpoint:
        raise _BadInput("--checkpoint DIR is required")
    else:
        model = models.load(args.checkpoint, name=args.model, device=device, ema=not args.no_ema)
    return model, torch.Generator(device).manual_seed(args.seed)


def _sample(args) -> int:
    from . import models, train

    model, gen = _load_for_inference(args)
    options = {o["dest"]: getattr(args, o["dest"]) for o in models.model_class(args.model).sample_options.values()
               if getattr(args, o["dest"], None) is not None}
    if args.num < 1:
        raise _BadInput(f"--num must be >= 1, got {args.num}")
    images = model.generate(args.num, gen, **options)
    out = args.out or os.path.join(args.checkpoint or ".", "sample.png")
    train.save_grid(images, out, nrow=args.nrow)
    print(f"wrote {out} ({len(images)} images {tuple(images.shape[1:])})")
    return 0


def _finite(obj):
    import math
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _eval(args) -> int:
    from . import checkpoint

    model, gen = _load_for_inference(args)
    if args.num < 1:
        raise _BadInput(f"--num must be >= 1, got {args.num}")
    metrics = model.evaluate(split=args.split, num=args.num, generator=gen)
    report = {"model": args.model, "checkpoint": args.checkpoint, "step": checkpoint.read(args.checkpoint).state.get("step"),
              "split": args.split, "num": args.num, "seed": args.seed, "metrics": _finite(metrics)}
    text = json.dumps(report, indent=1, allow_nan=False)
    print(text)
    if args.out:
        checkpoint.atomic_write(args.out, (text + "\n").encode())
    return 0


def _add_model_commands(sub, argv: List[str]) -> None:
    from . import data

    def common(sp):
        sp.add_argument("model", help="a name of `genkernels models`")
        sp.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        sp.add_argument("--backend", default="auto", help="genkernels backend: auto, reference, cpu, triton, cuda")
        sp.add_argument("--seed", type=int, default=0)

    sp = sub.add_parser("models", help="list the models with their presets")
    sp.set_defaults(func=_models)

    sp = sub.add_parser("train", help="train a model (resumable; DDP under torchrun)")
    common(sp)
    sp.add_argument("--preset", default=None, help="named config of the model (default digits)")
    sp.add_argument("--steps", type=int, default=None, help="total training steps (default: the config's)")
    sp.add_argument("--batch-size", type=int, default=None, help="global batch size (all processes)")
    sp.add_argument("--lr", type=float, default=None)
    sp.add_argument("--out", default=None, help="run directory (default runs/MODEL)")
    sp.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config field override")
    sp.add_argument("--log-every", type=int, default=50)
    sp.add_argument("--sample-every", type=int, default=500)
    sp.add_argument("--ckpt-every", type=int, default=500)
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_train)

    sp = sub.add_parser("sample", help="images from a trained model, as a PNG grid")
    common(sp)
    sp.add_argument("--checkpoint", help="run directory of `genkernels train` (or the model's --from-pretrained)")
    sp.add_argument("--num", type=int, default=64)
    sp.add_argument("--nrow", type=int, default=None, help="images per row of the grid")
    sp.add_argument("--out", default=None, help="PNG file (default CHECKPOINT/sample.png)")
    sp.add_argument("--no-ema", action="store_true", help="the trained weights instead of their EMA")
    # the model's own flags (e.g. --class K), when the model is named on the command line
    if len(argv) > 1 and argv[0] == "sample" and not argv[1].startswith("-"):
        from . import models
        try:
            for flag, kw in models.model_class(argv[1]).sample_options.items():
                sp.add_argument(flag, **kw)
        except (ValueError, ImportError):
            pass   # reported when the command runs
    sp.set_defaults(func=_sample)

    sp = sub.add_parser("eval", help="quality metrics of a trained model (JSON)")
    common(sp)
    sp.add_argument("--checkpoint", required=True, help="run directory of `genkernels train`")
    sp.add_argument("--split", default="test", choices=data.SPLITS)
    sp.add_argument("--num", type=int, default=500, help="images to evaluate")
    sp.add_argument("--out", default=None, help="also write the JSON here")
    sp.add_argument("--no-ema", action="store_true", help="the trained weights instead of their EMA")
    sp.set_defaults(func=_eval)


def _run_model_command(args) -> int:
    from .checkpoint import CheckpointError

    prog = f"genkernels {args.cmd}"
    try:
        return args.func(args)
    except (_BadInput, CheckpointError, ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
        if os.environ.get("GENKERNELS_DEBUG"):
            raise
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as e:
        if os.environ.get("GENKERNELS_DEBUG"):
            raise
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (the last checkpoint written is whole)", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _Parser(prog="genkernels", description=__doc__.split("\n")[0].strip("`. "))
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
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
    _add_model_commands(sub, argv)
    try:
        args = p.parse_args(argv)
    except SystemExit as e:   # usage errors and --help: a status for callers of main()
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    if args.cmd in ("models", "train", "sample", "eval"):
        return _run_model_command(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
