"""CycleGAN's mechanisms: cycle loss of an identity pair, the 50-image history pool, the lr schedule."""
import pytest
import torch
from torch import nn

from genkernels import data, models
from genkernels.models.gan_layers import ImagePool, LinearDecayAdam


def _batch(model, n=4):
    c = model.config
    return data.get_batch(data.load(c.data, "train", c.image_size), n, 0)


def test_identity_generators_have_zero_cycle_and_identity_loss():
    torch.manual_seed(0)
    model = models.build("cyclegan", "tiny")
    batch = _batch(model)
    *_, cycle, identity = model.cycle_losses(batch["image"], batch["image_b"])
    assert cycle.item() > 0.05 and identity.item() > 0.05           # real generators do not invert each other
    model.generator["ab"], model.generator["ba"] = nn.Identity(), nn.Identity()
    *_, cycle, identity = model.cycle_losses(batch["image"], batch["image_b"])
    assert cycle.item() == 0.0 and identity.item() == 0.0


def test_pool_returns_an_earlier_image_half_the_time_once_full():
    torch.manual_seed(0)
    size, queries = 50, 4000
    pool = ImagePool(size, (1, 1, 1))
    # while filling, every image comes straight back and is stored
    for i in range(size):
        assert pool(torch.full((1, 1, 1, 1), float(i))).item() == i
    assert int(pool.count) == size
    seen = set(range(size))                         # values inserted so far
    from_history = 0
    for i in range(size, size + queries):
        before = pool.images.flatten().clone()
        out = pool(torch.full((1, 1, 1, 1), float(i))).item()
        if out != i:
            from_history += 1
            assert out in seen and out in before.tolist()       # an earlier image ...
            assert i in pool.images.flatten().tolist()           # ... replaced by the current one
            assert out not in pool.images.flatten().tolist()
        else:
            assert torch.equal(pool.images.flatten(), before)   # the pool is unchanged
        seen.add(i)
    # Binomial(4000, 1/2): sd = 0.0079; 4 sd
    assert abs(from_history / queries - 0.5) < 0.032


def test_pool_within_a_batch_and_in_the_state_dict():
    torch.manual_seed(1)
    pool = ImagePool(3, (2, 4, 4))
    x = torch.randn(5, 2, 4, 4)
    out = pool(x)
    assert torch.equal(out[:3], x[:3])                  # the first 3 fill the pool and come back as they are
    for i in (3, 4):                                    # the rest: itself, or an earlier image it replaced
        assert torch.equal(out[i], x[i]) or (any(torch.equal(out[i], x[j]) for j in range(i))
                                             and any(torch.equal(x[i], im) for im in pool.images))
    assert set(pool.state_dict()) == {"images", "count"}
    copy = ImagePool(3, (2, 4, 4))
    copy.load_state_dict(pool.state_dict())
    assert torch.equal(copy.images, pool.images) and int(copy.count) == 3
    assert ImagePool(0, (1, 2, 2))(x[:, :1, :2, :2]) is not None


def test_discriminator_phase_sees_the_generator_phase_fakes():
    torch.manual_seed(0)
    model = models.build("cyclegan", "tiny", pool_size=50)
    batch = _batch(model)
    model(batch, "g", 0)
    fake_b = model._fakes[3].clone()
    with torch.no_grad():                           # the generator moves before the "d" phase
        for p in model.generator.parameters():
            p.add_(0.1)
    model(batch, "d", 0)
    assert torch.equal(model.pool_b.images[:4], fake_b)     # filling: the pool holds what D was shown
    # another batch object: fakes are made afresh
    other = {k: v.clone() for k, v in batch.items()}
    model(other, "d", 0)
    assert not torch.equal(model.pool_b.images[4:8], fake_b)


def test_generator_phase_leaves_the_discriminators_without_gradients():
    torch.manual_seed(0)
    model = models.build("cyclegan", "tiny")
    loss, _ = model(_batch(model), "g", 0)
    loss.backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None for p in model.generator.parameters())


def test_linear_decay_schedule_and_resume():
    p = nn.Parameter(torch.zeros(1))
    opt = LinearDecayAdam([p], lr=1.0, total_steps=10, decay_start=0.5)
    lrs = []
    for _ in range(10):
        p.grad = torch.ones(1)
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1, 1, 1, 1, 1, 1.0, 0.8, 0.6, 0.4, 0.2])
    resumed = LinearDecayAdam([p], lr=1.0, total_steps=10, decay_start=0.5)
    resumed.load_state_dict(opt.state_dict())
    p.grad = torch.ones(1)
    resumed.step()
    assert resumed.param_groups[0]["lr"] == 0.0                 # step 11 of 10: the rate has reached 0
    model = models.build("cyclegan", "tiny", steps=100)
    assert all(isinstance(o, LinearDecayAdam) and o.param_groups[0]["total_steps"] == 100
               for o in model.optimizers().values())


def test_authors_sizes_and_argument_errors():
    # the parameter counts the authors' code prints for resnet_9blocks and the basic PatchGAN, less the
    # conv biases their instance norms cancel (G: 64 + 128 + 256 + 9 * 2 * 256 + 128 + 64; D: 128 + 256 + 512)
    model = models.build("cyclegan", "paper")
    count = lambda m: sum(p.numel() for p in m.parameters())        # noqa: E731
    assert round((count(model.generator["ab"]) + 5248) / 1e6, 3) == 11.378
    assert round((count(model.discriminator["a"]) + 896) / 1e6, 3) == 2.765
    assert model.phases(0) == ("g", "d")
    with pytest.raises(ValueError, match="lambda_identity"):
        models.build("cyclegan", "tiny", out_channels=3)
    with pytest.raises(ValueError, match="direction"):
        models.build("cyclegan", "tiny").generate(2, torch.Generator(), direction="ac")


def test_bench_baseline_is_the_same_generator_on_torch_norms():
    from genkernels import bench_models, benchkit
    from genkernels.models.cyclegan import ResnetGenerator
    torch.manual_seed(0)
    gen = ResnetGenerator(3, 3, ngf=4, n_blocks=2).eval()
    plain = bench_models._with_torch_norms(gen)
    assert not any(type(m).__module__.startswith("genkernels.nn") for m in plain.modules())
    assert sum(type(m) is nn.InstanceNorm2d for m in plain.modules()) == 2 + 2 * 2 + 2 + 1
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(plain(x), gen(x), atol=1e-5, rtol=1e-5)
    (case,) = benchkit.cases("cyclegan", "cpu", quick=True)
    assert case.shape == "generator_128" and "genkernels[reference]" in case.impl_names


def test_generator_loss_is_lsgan_plus_10_cycle_plus_5_identity():
    """The authors' defaults: least-squares GAN loss, cycle weight 10, identity weight 0.5 * 10, pool of 50."""
    torch.manual_seed(0)
    model = models.build("cyclegan", "tiny")
    c = model.config
    assert (c.lambda_cycle, c.lambda_identity, c.pool_size) == (10.0, 0.5, 50)
    batch = _batch(model)
    loss, logs = model(batch, "g", 0)
    fake_a, fake_b, gan, cycle, identity = model.cycle_losses(batch["image"], batch["image_b"])
    D = model.discriminator
    lsgan = (D["b"](fake_b) - 1).pow(2).mean() + (D["a"](fake_a) - 1).pow(2).mean()
    torch.testing.assert_close(gan, lsgan)
    assert cycle.item() > 0 and identity.item() > 0
    torch.testing.assert_close(loss, gan + 10 * cycle + 5 * identity)
    torch.testing.assert_close(logs["cycle"], cycle)
