"""genkernels.train.fit and genkernels.checkpoint on a tiny test model: resume bit-for-bit, atomic
checkpoints, EMA, metrics.jsonl, PNG grids, refusals."""
import json
import os

import pytest
import torch

from genkernels import checkpoint, models, train

import tiny_model

FAST = dict(log_every=1, sample_every=1000, progress=False)


@pytest.fixture(autouse=True)
def tiny():
    models.register(tiny_model.TinyTest)
    yield
    models.unregister("tiny-test")


def build(**kw):
    torch.manual_seed(0)
    return models.build("tiny-test", "tiny", **kw)


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(ln).items() if k != "time"} for ln in f]


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_is_bit_for_bit(tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    m_full = build()
    train.fit(m_full, steps=7, out=full, ckpt_every=2, **FAST)
    m_part = build()
    train.fit(m_part, steps=3, out=part, ckpt_every=2, **FAST)      # checkpoints at 2 and 3
    assert json.load(open(os.path.join(part, "state.json")))["step"] == 3
    m_res = build(hidden=8)
    train.fit(m_res, steps=7, out=part, resume=True, ckpt_every=2, **FAST)
    assert_same_state(m_full, m_res)
    assert losses(full) == losses(part) and len(losses(full)) == 7
    a, b = checkpoint.read(full), checkpoint.read(part)
    for k in a.tensors:
        if not k.startswith("rng"):
            assert torch.equal(a.tensors[k], b.tensors[k]), k      # EMA and Adam moments too
    assert torch.equal(a.tensors["rng.torch.0"], b.tensors["rng.torch.0"])
    assert json.load(open(os.path.join(part, "state.json")))["rng_states"] == ["rng.torch.0"]


class Crash(Exception):
    pass


def test_resume_after_a_crash_redoes_the_lost_steps(tmp_path, monkeypatch):
    full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
    m_full = build()
    train.fit(m_full, steps=6, out=full, ckpt_every=4, **FAST)
    m = build()
    real_forward = tiny_model.TinyTest.forward

    def dies_at_step_5(self, batch, phase="main", step=0):
        if step == 5:
            raise Crash()
        return real_forward(self, batch, phase, step)
    monkeypatch.setattr(tiny_model.TinyTest, "forward", dies_at_step_5)
    with pytest.raises(Crash):
        train.fit(m, steps=6, out=crashed, ckpt_every=4, **FAST)
    monkeypatch.setattr(tiny_model.TinyTest, "forward", real_forward)
    assert [r["step"] for r in losses(crashed)] == [1, 2, 3, 4, 5]      # step 5 logged, not checkpointed
    assert checkpoint.read(crashed).state["step"] == 4
    m_res = build()
    train.fit(m_res, steps=6, out=crashed, resume=True, ckpt_every=4, **FAST)
    assert_same_state(m_full, m_res)
    assert losses(full) == losses(crashed)


def test_previews_do_not_change_training(tmp_path):
    a, b = build(), build()
    train.fit(a, steps=4, out=str(tmp_path / "a"), log_every=1, sample_every=1, progress=False)
    train.fit(b, steps=4, out=None, progress=False)
    assert_same_state(a, b)
    from PIL import Image
    pngs = sorted(os.listdir(tmp_path / "a" / "samples"))
    assert pngs == [f"step_{i:06d}.png" for i in range(1, 5)]
    im = Image.open(tmp_path / "a" / "samples" / pngs[-1])
    # 32 images (16 inputs + 16 reconstructions) of 8x8 in a 6x6 grid with 2 px padding
    assert im.mode == "L" and im.size == (6 * 10 + 2, 6 * 10 + 2)


def test_metrics_jsonl(tmp_path):
    out = str(tmp_path / "run")
    train.fit(build(), steps=5, out=out, log_every=2, sample_every=1000, progress=False)
    rows = [json.loads(ln) for ln in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4, 5]
    for r in rows:
        assert {"step", "time", "loss", "mse", "grad_norm_main"} <= set(r)
        assert r["loss"] == r["mse"] and r["loss"] > 0
    assert rows[0]["time"] <= rows[1]["time"] <= rows[2]["time"]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    m = build()
    train.fit(m, steps=2, out=out, **FAST)
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out) if n.endswith(("json", "tensors"))}

    class FailingStream:
        """A file whose writes fail after 1 KiB (a full disk, a dying NFS mount)."""
        def __init__(self, f):
            self.f, self.n = f, 0
        def write(self, b):
            if self.n + len(b) > 1024:
                self.f.write(b[: 1024 - self.n])
                raise OSError(28, "No space left on device")
            self.n += len(b)
            return self.f.write(b)
        def __getattr__(self, k):
            return getattr(self.f, k)
        def __enter__(self):
            return self
        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(checkpoint, "open", lambda p, mode="r": FailingStream(open(p, mode)), raising=False)
    with pytest.raises(OSError, match="No space"):
        train.fit(m, steps=4, out=out, resume=True, **FAST)
    monkeypatch.undo()
    after = {n: open(os.path.join(out, n), "rb").read() for n in before}
    assert after == before
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    loaded = models.load(out, ema=False)
    assert checkpoint.read(out).state["step"] == 2
    train.fit(loaded, steps=4, out=out, resume=True, **FAST)              # and it still resumes
    assert checkpoint.read(out).state["step"] == 4


def test_damaged_checkpoints_are_refused(tmp_path):
    out = str(tmp_path / "run")
    train.fit(build(), steps=1, out=out, **FAST)
    path = os.path.join(out, checkpoint.WEIGHTS)
    blob = open(path, "rb").read()
    for damaged, what in ((blob[: len(blob) // 2], "truncated"), (b"\x00" * 8 + blob[8:], "corrupt"),
                          (b"", "empty")):
        open(path, "wb").write(damaged)
        with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
            models.load(out)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        models.load(str(tmp_path / "nowhere"))
    with pytest.raises(checkpoint.CheckpointError, match="holds no checkpoint.safetensors"):
        models.load(str(tmp_path))


def test_ema(tmp_path):
    out = str(tmp_path / "run")
    m = build()
    decay = m.config.ema_decay
    dec0 = m.dec.weight.detach().clone()
    ema = train.ema_init(m)
    assert set(ema) == {"dec.weight", "dec.bias"}
    with torch.no_grad():
        m.dec.weight.add_(1.0)
    train.ema_update(ema, m, decay)
    torch.testing.assert_close(ema["dec.weight"], decay * dec0 + (1 - decay) * (dec0 + 1.0))

    m = build()
    train.fit(m, steps=5, out=out, **FAST)
    with_ema, without = models.load(out), models.load(out, ema=False)
    assert_same_state(without, m)
    assert not torch.equal(with_ema.dec.weight, m.dec.weight)
    assert torch.equal(with_ema.enc.weight, m.enc.weight)               # only ema_modules() are averaged
    saved = checkpoint.read(out).group("ema")
    assert torch.equal(with_ema.dec.weight, saved["dec.weight"])


def test_refusals(tmp_path):
    out = str(tmp_path / "run")
    train.fit(build(), steps=2, out=out, **FAST)
    good = open(os.path.join(out, checkpoint.WEIGHTS), "rb").read()
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train.fit(build(), steps=2, out=out, **FAST)
    with pytest.raises(checkpoint.CheckpointError, match="hidden=8"):
        train.fit(build(hidden=12), steps=4, out=out, resume=True, **FAST)
    with pytest.raises(checkpoint.CheckpointError, match="lr"):
        train.fit(build(), steps=4, lr=0.5, out=out, resume=True, **FAST)
    with pytest.raises(ValueError, match="already at step 2"):
        train.fit(build(), steps=1, out=out, resume=True, **FAST)
    assert open(os.path.join(out, checkpoint.WEIGHTS), "rb").read() == good
    with pytest.raises(checkpoint.CheckpointError, match="not 'other'"):
        models.load(out, name="other")
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        train.fit(build(), steps=2, out=str(tmp_path / "nothing"), resume=True, **FAST)
    for kw, what in ((dict(steps=0), "steps"), (dict(batch_size=-1), "batch_size"), (dict(log_every=0), "log_every"),
                     (dict(resume=True), "resume"), (dict(amp=True), "amp")):
        with pytest.raises(ValueError, match=what):
            train.fit(build(), **{"steps": 1, "progress": False, **kw})


def test_non_finite_loss_stops_before_checkpointing(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    m = build()
    train.fit(m, steps=2, out=out, **FAST)
    good = open(os.path.join(out, checkpoint.WEIGHTS), "rb").read()
    real = tiny_model.TinyTest.forward
    monkeypatch.setattr(tiny_model.TinyTest, "forward",
                        lambda self, b, phase="main", step=0: (real(self, b)[0] * float("nan"), {}))
    with pytest.raises(FloatingPointError, match="loss is nan at step 3"):
        train.fit(m, steps=4, out=out, resume=True, log_every=100, ckpt_every=1, progress=False)
    assert open(os.path.join(out, checkpoint.WEIGHTS), "rb").read() == good


def test_save_grid_rgb(tmp_path):
    from PIL import Image
    x = torch.linspace(-1, 1, 5 * 3 * 4 * 4).reshape(5, 3, 4, 4)
    train.save_grid(x, str(tmp_path / "g.png"), nrow=5, pad=1)
    im = Image.open(tmp_path / "g.png")
    assert im.mode == "RGB" and im.size == (5 * 5 + 1, 4 + 2)
    import numpy as np
    px = torch.from_numpy(np.asarray(im).copy())
    assert px.shape == (6, 26, 3)
    assert px[1, 1].tolist() == ((x[0, :, 0, 0] + 1) * 127.5).round().int().tolist()
    assert px[0, 0].tolist() == [255, 255, 255] and px[1, -1].tolist() == [255, 255, 255]   # padding
    with pytest.raises(ValueError, match="images"):
        train.save_grid(torch.zeros(2, 2, 4, 4), str(tmp_path / "bad.png"))
