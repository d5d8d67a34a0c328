"""cfg: condition dropout, guidance fused into one ddim_step per step, guidance 1 == conditional model."""
import pytest
import torch

import genkernels.nn.scheduler as scheduler_module
from genkernels import models


def _random_model(**kw):
    model = models.build("cfg", "tiny", **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def _plain_ddim(model, labels, steps, seed):
    """DDIM with the UNet called on one class-label batch only (no guidance)."""
    sched = model.sampler(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), 1, 8, 8, generator=g)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model.unet(x, t, class_labels=labels), t, x).prev_sample
    return x.clamp(-1, 1)


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional():
    model = _random_model()
    labels = torch.tensor([0, 3, 7, 9])
    cond = model.generate(4, torch.Generator().manual_seed(2), guidance=1.0, labels=labels, steps=5)
    torch.testing.assert_close(cond, _plain_ddim(model, labels, 5, 2), rtol=1e-4, atol=1e-5)
    uncond = model.generate(4, torch.Generator().manual_seed(2), guidance=0.0, labels=labels, steps=5)
    torch.testing.assert_close(uncond, _plain_ddim(model, torch.full((4,), 10), 5, 2), rtol=1e-4, atol=1e-5)
    assert (model.generate(4, torch.Generator().manual_seed(2), guidance=4.0, labels=labels, steps=5)
            - cond).abs().max() > 1e-3


def test_one_unet_call_and_one_fused_step_per_step(monkeypatch):
    model = _random_model()
    calls = {"ddim_step": 0, "unet": 0}
    real_step = scheduler_module.ddim_step

    def counting_step(sample, model_output, *a, **kw):
        calls["ddim_step"] += 1
        assert kw["guidance_scale"] == 3.0 and model_output.shape[0] == 2 * sample.shape[0]
        return real_step(sample, model_output, *a, **kw)

    monkeypatch.setattr(scheduler_module, "ddim_step", counting_step)
    model.unet.register_forward_hook(lambda *a: calls.__setitem__("unet", calls["unet"] + 1))
    model.generate(3, torch.Generator().manual_seed(0), class_label=7, guidance=3.0, steps=6)
    assert calls == {"ddim_step": 6, "unet": 6}


def test_condition_dropout():
    labels = torch.arange(10).repeat(100)
    batch = {"label": labels}
    torch.manual_seed(0)
    dropped = (models.build("cfg", "tiny", p_uncond=0.3).train_labels(batch) == 10).float().mean().item()
    assert 0.25 < dropped < 0.35
    assert torch.equal(models.build("cfg", "tiny", p_uncond=0.0).train_labels(batch), labels)
    assert (models.build("cfg", "tiny", p_uncond=1.0).train_labels(batch) == 10).all()
    assert models.build("cfg", "tiny").unet.class_embedding.num_embeddings == 11


def test_errors():
    model = models.build("cfg", "tiny")
    with pytest.raises(ValueError, match="guidance"):
        model.generate(2, torch.Generator(), guidance=-1.0)
    with pytest.raises(ValueError, match="class labels"):
        model.generate(2, torch.Generator(), class_label=10)
    with pytest.raises(ValueError, match="labels"):
        model.generate(2, torch.Generator(), labels=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="p_uncond"):
        models.build("cfg", "tiny", p_uncond=1.5)
    assert set(models.model_class("cfg").sample_options) >= {"--class", "--guidance", "--steps", "--eta"}
