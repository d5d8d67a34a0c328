"""The contract every registered model keeps (genkernels.models.names(), `tiny` preset), plus the
framework's own test model: reference and fused backends agree, training steps change the weights with
finite losses, preview / generate / evaluate give what the contract says, save -> load gives the same
outputs, and a run resumed after a crash equals an uninterrupted run."""
import copy
import json
import math

import pytest
import torch

import genkernels
from genkernels import checkpoint, data, models, train

import tiny_model

NAMES = [n for n in models.names() if n != tiny_model.TinyTest.name] + [tiny_model.TinyTest.name]
QUIET = dict(log_every=1, sample_every=10_000, progress=False)


@pytest.fixture(autouse=True)
def tiny():
    models.register(tiny_model.TinyTest)
    yield
    models.unregister(tiny_model.TinyTest.name)


def build(name, seed=0):
    torch.manual_seed(seed)
    return models.build(name, "tiny")


def batch_of(model, n=None):
    cfg = model.config
    train_split = data.load(cfg.data, "train", cfg.image_size)
    return data.get_batch(train_split, n or cfg.batch_size, step=0, seed=0)


def phase_outputs(model, batch):
    """Loss, logs and parameter gradients of every phase of step 0, each from the same RNG state."""
    out = []
    for phase in model.phases(0):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss, logs = model(batch, phase=phase, step=0)
        loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        out.append((phase, loss.detach(), grads))
    model.zero_grad(set_to_none=True)
    return out


def close(actual, expected, what, rel=2e-3, floor=0.0):
    """Within float32 rounding carried through a network: relative to the tensor's own scale, plus
    `floor` (an absolute term for gradients that cancel to ~0, e.g. a bias before a norm)."""
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= rel * scale + floor, f"{what}: max error {err:.3g} for scale {scale:.3g} (floor {floor:.3g})"


@pytest.mark.parametrize("name", NAMES)
def test_contract_attributes(name):
    cls = models.model_class(name)
    assert cls.name == name and cls.description and "\n" not in cls.description
    assert {"tiny", "digits"} <= set(cls.presets)
    for preset in cls.presets:
        cfg = models.make_config(name, preset)
        assert cfg.data in data.DATASETS, (preset, cfg.data)
    for flag, kw in cls.sample_options.items():
        assert flag.startswith("--") and "dest" in kw


@pytest.mark.parametrize("name", NAMES)
def test_reference_and_fused_backends_agree(name):
    model = build(name)
    model.train()
    twin = copy.deepcopy(model)      # a forward may update buffers (EMA codebooks, running means)
    batch = batch_of(model)
    fused = phase_outputs(model, batch)
    with genkernels.use_backend("reference"):
        ref = phase_outputs(twin, batch)
    assert [p for p, _, _ in fused] == [p for p, _, _ in ref]
    for (phase, loss_f, grads_f), (_, loss_r, grads_r) in zip(fused, ref):
        assert torch.isfinite(loss_f), phase
        close(loss_f, loss_r, f"{phase} loss", rel=1e-4)
        assert grads_f.keys() == grads_r.keys() and grads_f, phase
        scale = max(g.abs().max().item() for g in grads_r.values())
        for k in grads_f:
            close(grads_f[k], grads_r[k], f"{phase} grad of {k}", floor=1e-4 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_change_weights_with_finite_losses(name):
    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train.fit(model, steps=3, out=None, **QUIET)
    assert result["step"] == 3
    assert result["logs"] and all(math.isfinite(v) for v in result["logs"].values()), result["logs"]
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "no weight changed in 3 steps"
    for phase, opt in model.optimizers().items():
        params = {id(p) for g in opt.param_groups for p in g["params"]}
        named = [k for k, p in model.named_parameters() if id(p) in params]
        assert any(k in changed for k in named), f"phase {phase!r} trained none of its parameters"


@pytest.mark.parametrize("name", NAMES)
def test_preview_generate_evaluate(name):
    model = build(name).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    imgs = model.generate(3, g)
    assert imgs.dim() == 4 and imgs.shape[0] == 3 and imgs.shape[1] in (1, 3), tuple(imgs.shape)
    assert imgs.shape[-2:] == (cfg.image_size, cfg.image_size), tuple(imgs.shape)
    assert torch.isfinite(imgs).all() and imgs.min() >= -1 - 1e-5 and imgs.max() <= 1 + 1e-5
    again = model.generate(3, torch.Generator().manual_seed(0))
    assert torch.equal(imgs, again), "generate() must depend only on its generator"
    prev = model.preview(batch_of(model, 4), torch.Generator().manual_seed(0))
    assert prev.dim() == 4 and prev.shape[1] in (1, 3) and torch.isfinite(prev).all()
    report = model.evaluate("test", num=8, generator=torch.Generator().manual_seed(0))
    assert isinstance(report, dict) and report
    json.dumps(report, allow_nan=True)          # JSON-able (non-finite floats become null in the CLI)


class Crash(Exception):
    pass


@pytest.mark.parametrize("name", NAMES)
def test_save_load_and_resume_equals_uninterrupted(name, tmp_path):
    """A run that dies in step 3 of 4 and is resumed from its step-2 checkpoint ends where an
    uninterrupted run does: same weights, optimizer state, EMA and logged losses. And the checkpoint
    loads (models.load) into the same model with the same outputs."""
    full = build(name)
    train.fit(full, steps=4, out=str(tmp_path / "full"), ckpt_every=2, **QUIET)
    part = build(name)

    def dies_in_step_3(batch, phase="main", step=0):
        if step == 2:
            raise Crash()
        return type(part).forward(part, batch, phase, step)
    part.forward = dies_in_step_3
    with pytest.raises(Crash):
        train.fit(part, steps=4, out=str(tmp_path / "part"), ckpt_every=2, **QUIET)
    resumed = build(name, seed=123)            # other initial weights: all state must come from the checkpoint
    train.fit(resumed, steps=4, out=str(tmp_path / "part"), resume=True, ckpt_every=2, **QUIET)
    sa, sb = full.state_dict(), resumed.state_dict()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"differs after resume: {diff[:5]}"
    a, b = checkpoint.read(str(tmp_path / "full")), checkpoint.read(str(tmp_path / "part"))
    diff = [k for k in a.tensors if not k.startswith("rng.") and not torch.equal(a.tensors[k], b.tensors[k])]
    assert not diff, f"checkpoints differ after resume: {diff[:5]}"
    rows = lambda d: [{k: v for k, v in json.loads(ln).items() if k != "time"}  # noqa: E731
                      for ln in open(tmp_path / d / "metrics.jsonl")]
    assert rows("full") == rows("part")

    # save -> load: the same model, the same outputs
    loaded = models.load(str(tmp_path / "full"), name=name, ema=False)
    assert type(loaded) is type(full) and loaded.config == full.config
    sl = loaded.state_dict()
    assert sl.keys() == sa.keys() and all(torch.equal(sa[k], sl[k]) for k in sa)
    full.eval()
    assert torch.equal(full.generate(2, torch.Generator().manual_seed(3)),
                       loaded.generate(2, torch.Generator().manual_seed(3)))
