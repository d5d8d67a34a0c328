"""One training loop for every model of genkernels.models.

    model = genkernels.models.build("vae", preset="digits")
    genkernels.train.fit(model, steps=2000, out="runs/vae")            # or `genkernels train vae --out runs/vae`
    genkernels.train.fit(model, steps=3000, out="runs/vae", resume=True)

Per step: the model's phases in order, each ``loss = model(batch, phase, step)`` (through
DistributedDataParallel when distributed), backward, gradient clipping to ``config.grad_clip``, the
phase's optimizer step; then the EMA of ``model.ema_modules()`` (decay ``config.ema_decay``).
Batches come from :func:`genkernels.data.get_batch`, a pure function of (seed, step, rank), and the
model's randomness from torch's global RNG, seeded with seed + rank and saved in every checkpoint: so
``--resume`` continues exactly: a run resumed after a crash ends where an uninterrupted one does, and
N steps then M more give the weights and losses of N + M steps for models whose updates do not depend
on the total number of steps (a learning-rate decay over ``config.steps`` changes with ``steps``, and
what a model keeps in its optimizers' param_groups is restored as saved).

Written into ``out`` (rank 0 only): ``metrics.jsonl`` (one JSON object per logged step: ``step``,
``time`` in seconds of training, ``loss`` / ``loss_<phase>`` and the model's named logs),
``samples/step_<N>.png`` (``model.preview`` on held-out images, with the EMA weights), and the
checkpoint (see genkernels.checkpoint). A directory that already holds a checkpoint is only ever
continued (``resume=True``), never started over.

Distributed: under ``torchrun --nproc_per_node=K`` (or with a process group already initialised) each
rank takes its 1/K of every global batch (``batch_size`` is the global batch), the gradients are
averaged by DDP (gloo on CPU, nccl on CUDA), so K processes follow one process on the whole batch.
Mixed precision (bfloat16 autocast, no loss scaling needed) is used on CUDA only.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist

from . import checkpoint as ckpt_io
from . import data as gdata

Tensor = torch.Tensor


# ---------------------------------------------------------------- distributed setup
def _dist_env() -> Dict[str, int]:
    """rank / world_size / local_rank from an initialised process group or torchrun's environment."""
    if dist.is_available() and dist.is_initialized():
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
                "local_rank": int(os.environ.get("LOCAL_RANK", dist.get_rank()))}
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return {"rank": int(os.environ.get("RANK", "0")), "world_size": ws,
            "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}


def _init_dist(device: torch.device) -> bool:
    """Start the process group torchrun asked for. True if this call started it (and must end it)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


# ---------------------------------------------------------------- EMA
def ema_init(model) -> Dict[str, Tensor]:
    """Float copies of the parameters and buffers of model.ema_modules(), keyed as in state_dict."""
    names = list(model.ema_modules())
    sd = model.state_dict()
    out = {}
    for mod in names:
        keys = [k for k in sd if k == mod or k.startswith(mod + ".")]
        if not keys:
            raise ValueError(f"ema_modules() names {mod!r}, which has no parameters or buffers")
        out.update({k: sd[k].detach().clone() for k in keys})
    return out


@torch.no_grad()
def ema_update(ema: Dict[str, Tensor], model, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights (floating tensors); other buffers are copied."""
    sd = model.state_dict()
    floats = [k for k, v in ema.items() if v.is_floating_point()]
    if floats:
        torch._foreach_lerp_([ema[k] for k in floats], [sd[k].detach() for k in floats], 1.0 - decay)
    for k, v in ema.items():
        if not v.is_floating_point():
            v.copy_(sd[k])


@contextlib.contextmanager
def ema_weights(model, ema: Optional[Dict[str, Tensor]]) -> Iterator[None]:
    """Run the block with the EMA weights in the model, then put the trained ones back."""
    if not ema:
        yield
        return
    sd = model.state_dict()
    saved = {k: sd[k].detach().clone() for k in ema}
    with torch.no_grad():
        for k, v in ema.items():
            sd[k].copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                sd[k].copy_(v)


# ---------------------------------------------------------------- images
def save_grid(images: Tensor, path: str, nrow: Optional[int] = None, pad: int = 2) -> None:
    """Save [N, C, H, W] images in [-1, 1] (C = 1 or 3) as one PNG grid (white padding), atomically."""
    import io

    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, 1 or 3, H, W] tensor, got {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L" if c == 1 else "RGB").save(buf, format="PNG")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ckpt_io.atomic_write(path, buf.getvalue())


# ---------------------------------------------------------------- RNG state
def _rng_state(device: torch.device) -> Dict[str, Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _gather_rng(device: torch.device, world_size: int) -> Dict[str, Tensor]:
    """Every rank's RNG states, named ``<kind>.<rank>`` (collective: all ranks call it)."""
    mine = _rng_state(device)
    if world_size == 1:
        return {f"{k}.0": v for k, v in mine.items()}
    everyone: List[Any] = [None] * world_size
    dist.all_gather_object(everyone, {k: v.cpu() for k, v in mine.items()})
    return {f"{k}.{r}": v for r, st in enumerate(everyone) for k, v in st.items()}


# ---------------------------------------------------------------- the loop
def _resolve_device(device: Any, local_rank: int) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device is cuda but no CUDA device is available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def _check_resume(model, ck: ckpt_io.Checkpoint, steps: int) -> None:
    if ck.model != model.name:
        raise ckpt_io.CheckpointError(f"{ck.directory} holds a checkpoint of model {ck.model!r}, not {model.name!r}")
    mine = model.config.to_dict()
    theirs = {**ck.config}
    diff = sorted(k for k in set(mine) | set(theirs)
                  if k != "steps" and json.loads(json.dumps(mine.get(k))) != theirs.get(k))
    if diff:
        k = diff[0]
        raise ckpt_io.CheckpointError(f"{ck.directory} was trained with {k}={theirs.get(k)!r}, this run has "
                                      f"{k}={mine.get(k)!r} (a resumed run keeps the config; only steps may change)")
    if ck.state.get("step", 0) > steps:
        raise ValueError(f"{ck.directory} is already at step {ck.state['step']}, beyond steps={steps}")


def _trim_metrics(path: str, step: int) -> None:
    """Keep the lines of steps <= step: a run that died after its last checkpoint logged steps the
    resumed run does again."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= step]
    ckpt_io.atomic_write(path, "".join(lines).encode())


def fit(model, *, steps: Optional[int] = None, batch_size: Optional[int] = None, lr: Optional[float] = None,
        out: Optional[str] = None, resume: bool = False, seed: int = 0, device: Any = "cpu",
        log_every: int = 50, sample_every: int = 500, ckpt_every: int = 500, num_preview: int = 16,
        amp: Optional[bool] = None, progress: bool = True, data: Optional[Dict[str, Tensor]] = None
        ) -> Dict[str, Any]:
    """Train `model` (a genkernels.models Model) in place; see the module docstring.

    steps / batch_size / lr: override the model's config (``batch_size`` is the global batch over all
    ranks). out: directory for metrics.jsonl, sample grids and the checkpoint (None: nothing written).
    resume: continue the checkpoint in `out` (its config must match, except ``steps``). amp: bfloat16
    autocast, default on for CUDA; refused on CPU. data: the training split (default: the model's
    ``config.data`` at ``config.image_size``). Returns ``{"step", "logs"}`` (the last logged values).
    """
    cfg = model.config
    for key, val in (("steps", steps), ("batch_size", batch_size), ("lr", lr)):
        if val is not None:
            if not isinstance(val, (int, float)) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{key} must be a positive number, got {val!r}")
            setattr(cfg, key, type(getattr(cfg, key))(val))
    for key, val in (("log_every", log_every), ("sample_every", sample_every), ("ckpt_every", ckpt_every)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{key} must be a positive int, got {val!r}")
    if resume and out is None:
        raise ValueError("resume=True needs out (the checkpoint directory)")

    env = _dist_env()
    rank, world = env["rank"], env["world_size"]
    dev = _resolve_device(device, env["local_rank"])
    amp = (dev.type == "cuda") if amp is None else amp
    if amp and dev.type != "cuda":
        raise ValueError("amp is for CUDA devices only")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")

    # a directory with a checkpoint is continued or left alone: checked before anything is written
    ck = None
    if out is not None:
        if resume:
            ck = ckpt_io.read(out)
            _check_resume(model, ck, cfg.steps)
        elif ckpt_io.exists(out):
            raise ValueError(f"{out} already holds a checkpoint: resume it or choose another output directory")

    started_dist = _init_dist(dev)
    try:
        return _fit(model, cfg, ck, out, seed, dev, rank, world, log_every, sample_every, ckpt_every,
                    num_preview, amp, progress, data)
    finally:
        if started_dist:
            dist.destroy_process_group()


def _fit(model, cfg, ck, out, seed, dev, rank, world, log_every, sample_every, ckpt_every, num_preview, amp,
         progress, train_data):
    main = rank == 0
    model.to(dev).train()
    if ck is not None:
        ckpt_io.load_model_state(model, ck, use_ema=False)
    optimizers = model.optimizers()
    phase_params = {p: [q for g in o.param_groups for q in g["params"]] for p, o in optimizers.items()}
    ema = ema_init(model) if cfg.ema_decay is not None else None
    if ema is not None and not ema:
        ema = None            # the model averages nothing
    start, elapsed = 0, 0.0
    torch.manual_seed(seed + rank)
    if dev.type == "cuda":
        torch.cuda.manual_seed(seed + rank)
    if ck is not None:
        for phase, opt in optimizers.items():
            opt.load_state_dict(ck.optimizer_state(phase))
        if ema is not None:
            saved = ck.group("ema")
            if set(saved) != set(ema):
                raise ckpt_io.CheckpointError(f"{ck.directory}: its EMA tensors do not match ema_modules()")
            for k in ema:
                ema[k].copy_(saved[k])
        if ck.state.get("world_size", 1) == world:
            rng = ck.group("rng")
            _set_rng_state({k.split(".")[0]: v for k, v in rng.items() if k.endswith(f".{rank}")}, dev)
        # else: another number of processes: the run continues, but not bit-for-bit (fresh RNG streams)
        start, elapsed = ck.state["step"], float(ck.state.get("time", 0.0))
        seed = ck.state.get("seed", seed)

    if train_data is None:
        train_data = gdata.load(cfg.data, "train", cfg.image_size)
    train_data = {k: v.to(dev) for k, v in train_data.items()}
    preview_batch = None
    if main and out is not None:
        os.makedirs(out, exist_ok=True)
        if ck is None and os.path.exists(os.path.join(out, "metrics.jsonl")):
            os.remove(os.path.join(out, "metrics.jsonl"))      # left by a run that never checkpointed
        test = gdata.load(cfg.data, "test", cfg.image_size)
        preview_batch = {k: v[:num_preview].to(dev) for k, v in test.items()}
        if ck is not None:
            _trim_metrics(os.path.join(out, "metrics.jsonl"), start)

    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # with several phases, each (a GAN's "d", "g") reaches only part of the model
        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                  find_unused_parameters=len(optimizers) > 1)

    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    bar = None
    if main and progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc=model.name, dynamic_ncols=True, leave=True)

    def save(step: int, logs) -> None:
        rng = _gather_rng(dev, world)            # collective
        if main and out is not None:
            state = {"step": step, "seed": seed, "world_size": world, "time": round(elapsed + time.perf_counter() - t0, 3),
                     "logs": logs, "rng_states": sorted(f"rng.{k}" for k in rng)}   # tensors of the safetensors file
            ckpt_io.save(out, model, ema=ema, optimizers=optimizers, rng=rng, state=state)

    def preview(step: int) -> None:
        if preview_batch is None:
            return
        model.eval()
        # sampling must not move the training RNG (resume would diverge otherwise)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), ema_weights(model, ema), autocast():
            g = torch.Generator(dev).manual_seed(seed)
            images = model.preview(preview_batch, g)
        model.train()
        save_grid(images, os.path.join(out, "samples", f"step_{step:06d}.png"))

    t0 = time.perf_counter()
    logs: Dict[str, float] = {}
    done = start
    for step in range(start, cfg.steps):
        batch = gdata.get_batch(train_data, cfg.batch_size, step, seed, rank, world, device=dev)
        step_logs: Dict[str, Tensor] = {}
        for phase in model.phases(step):
            with autocast():
                loss, extra = net(batch, phase=phase, step=step)
            loss.backward()
            if cfg.grad_clip is not None:
                step_logs[f"grad_norm_{phase}"] = torch.nn.utils.clip_grad_norm_(phase_params[phase], cfg.grad_clip)
            optimizers[phase].step()
            # all gradients, not only this phase's: a generator loss also reaches the critic's weights
            model.zero_grad(set_to_none=True)
            step_logs["loss" if phase == "main" else f"loss_{phase}"] = loss.detach()
            for k, v in extra.items():
                step_logs[k if k not in step_logs else f"{phase}/{k}"] = torch.as_tensor(v).detach()
        if ema is not None:
            ema_update(ema, model, cfg.ema_decay)
        done = step + 1
        is_last = done == cfg.steps
        log_now, ckpt_now = done % log_every == 0 or is_last, out is not None and (done % ckpt_every == 0 or is_last)
        if log_now or ckpt_now:           # never checkpoint a non-finite loss unchecked
            vals = torch.stack([v.float().mean().to(dev) for v in step_logs.values()])
            if world > 1:                        # the loss of the global batch
                dist.all_reduce(vals)
                vals /= world
            logs = dict(zip(step_logs, vals.tolist()))
            bad = [k for k, v in logs.items() if k.startswith("loss") and not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"{model.name}: {bad[0]} is {logs[bad[0]]} at step {done}; "
                                         f"the last checkpoint is left as it was")
            if log_now and main and out is not None:
                line = {"step": done, "time": round(elapsed + time.perf_counter() - t0, 3), **logs}
                with open(os.path.join(out, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(line) + "\n")
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if not k.startswith("grad_norm")},
                                refresh=False)
        if bar is not None:
            bar.update(1)
        if main and out is not None and (done % sample_every == 0 or is_last):
            preview(done)
        if ckpt_now:
            save(done, logs)
    if bar is not None:
        bar.close()
    return {"step": done, "logs": logs}


__all__ = ["ema_init", "ema_update", "ema_weights", "fit", "save_grid"]
