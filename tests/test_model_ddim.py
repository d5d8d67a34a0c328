"""ddim: the fused sampling loop gives the same images as diffusers' DDIMScheduler loop (same model, noise),
step for step."""
import pytest
import torch

from genkernels import models

diffusers = pytest.importorskip("diffusers")


def _random_model(name="ddim", **kw):
    model = models.build(name, "tiny", **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("steps,eta,spacing", [(5, 0.0, "leading"), (13, 0.0, "trailing"), (6, 0.7, "leading")])
def test_same_images_as_diffusers_ddim_loop(steps, eta, spacing):
    model = _random_model(timestep_spacing=spacing)
    ours = model.generate(4, torch.Generator().manual_seed(3), steps=steps, eta=eta)
    sched = diffusers.DDIMScheduler(num_train_timesteps=100, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 8, 8, generator=g)
    ours_sched, g_ours = model.sampler(steps), torch.Generator().manual_seed(3)
    y = torch.randn(4, 1, 8, 8, generator=g_ours)
    assert torch.equal(ours_sched.timesteps, sched.timesteps)
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):       # step for step: the fused step on the same input
            x_in = x
            x = sched.step(model.unet(x, t), t, x, eta=eta, generator=g).prev_sample
            y = model.denoise(ours_sched, x_in, t, g_ours, eta=eta)
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {i} (t={t}): {m}")
    assert len(sched.timesteps) == steps
    torch.testing.assert_close(ours, x.clamp(-1, 1), rtol=1e-4, atol=1e-5)


def test_deterministic_and_weights_shared_with_ddpm():
    """eta = 0 is deterministic given the start noise; a DDPM's weights load into DDIM as they are."""
    ddpm = _random_model("ddpm")
    ddim = models.build("ddim", "tiny")
    ddim.load_state_dict(ddpm.state_dict())
    noise = torch.randn(2, 1, 8, 8)
    a = ddim.generate(2, torch.Generator().manual_seed(0), noise=noise, steps=3)
    b = ddim.generate(2, torch.Generator().manual_seed(1), noise=noise, steps=3)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="eta"):
        ddim.generate(1, torch.Generator(), eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        models.build("ddim", "tiny", eta=-1.0)
