"""ddpm: training targets, beta schedules and ancestral sampling equal diffusers' DDPMScheduler numbers."""
import pytest
import torch
import torch.nn.functional as F

from genkernels import models

diffusers = pytest.importorskip("diffusers")


def _batch(model, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.config.image_size
    return {"image": torch.rand(n, 1, s, s, generator=g) * 2 - 1, "label": torch.randint(0, 10, (n,), generator=g)}


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_training_target_is_diffusers(prediction_type, schedule):
    """The loss is mse(unet(x_t, t), target) with x_t and the target as diffusers' DDPMScheduler makes them."""
    model = models.build("ddpm", "tiny", prediction_type=prediction_type, beta_schedule=schedule)
    batch = _batch(model)
    torch.manual_seed(5)
    loss, logs = model(batch)
    ref_sched = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule=(
        "squaredcos_cap_v2" if schedule == "cosine" else schedule), prediction_type=prediction_type)
    torch.manual_seed(5)
    x0 = batch["image"]
    noise = torch.randn_like(x0)
    t = torch.randint(0, 100, (x0.shape[0],))
    xt = ref_sched.add_noise(x0, noise, t)
    target = {"epsilon": noise, "sample": x0, "v_prediction": ref_sched.get_velocity(x0, noise, t)}[prediction_type]
    with torch.no_grad():
        ref = F.mse_loss(model.unet(xt, t), target)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(logs["mse"], loss)


@pytest.mark.parametrize("steps", [4, 9])
def test_ancestral_sampling_equals_diffusers_loop(steps):
    model = models.build("ddpm", "tiny", prediction_type="v_prediction", beta_schedule="cosine").eval()
    with torch.no_grad():
        for p in model.parameters():   # a random (untrained) UNet gives non-trivial outputs
            p.normal_(0, 0.1)
    ours = model.generate(3, torch.Generator().manual_seed(7), steps=steps)
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                    prediction_type="v_prediction")
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 1, 8, 8, generator=g)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model.unet(x, t), t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x.clamp(-1, 1), rtol=1e-4, atol=1e-5)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = models.build("ddpm", "tiny")
    batch = _batch(model, 8)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def fixed_loss():
        torch.manual_seed(123)   # the same noise and timesteps each time
        with torch.no_grad():
            return model(batch)[0].item()

    before = fixed_loss()
    for _ in range(20):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.7 * before


def test_config_errors_and_ema():
    assert models.build("ddpm", "tiny").ema_modules() == ["unet"]
    with pytest.raises(ValueError, match="prediction_type"):
        models.build("ddpm", "tiny", prediction_type="noise")
    with pytest.raises(ValueError, match="beta_schedule"):
        models.build("ddpm", "tiny", beta_schedule="quadratic")
    with pytest.raises(ValueError, match="attention_levels"):
        models.build("ddpm", "tiny", attention_levels=(True,))
    with pytest.raises(ValueError, match="image_size"):
        models.build("ddpm", "tiny", image_size=9)
    with pytest.raises(ValueError, match="sample_steps"):
        models.build("ddpm", "tiny", sample_steps=0)
