"""Two processes under torchrun (gloo) train like one process on the whole batch."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from genkernels import checkpoint, models, train

import tiny_model

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    import tiny_model
    from genkernels import models, train
    models.register(tiny_model.TinyTest)
    torch.manual_seed(0)
    model = models.build("tiny-test", "tiny", noise=0.0)   # no per-rank randomness: exact comparison
    train.fit(model, steps=4, batch_size=16, out=sys.argv[1], log_every=1, sample_every=2, progress=False)
""")


@pytest.fixture
def tiny():
    models.register(tiny_model.TinyTest)
    yield
    models.unregister("tiny-test")


def test_two_gloo_processes_equal_one_on_the_whole_batch(tmp_path, tiny):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=TESTS))
    out = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), out], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    torch.manual_seed(0)
    single = models.build("tiny-test", "tiny", noise=0.0)
    train.fit(single, steps=4, batch_size=16, out=str(tmp_path / "single"), log_every=1, sample_every=2,
              progress=False)
    ddp = models.load(out, ema=False)
    init = models.build("tiny-test", "tiny")
    for (k, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)
        assert not torch.equal(a, init.state_dict()[k]) or k.startswith("norm")   # training moved them
    ck = checkpoint.read(out)
    assert ck.state["world_size"] == 2 and {"rng.torch.0", "rng.torch.1"} <= set(ck.tensors)
    # rank 0 alone wrote the logs, and they are the global batch's losses
    rows = [json.loads(ln) for ln in open(os.path.join(out, "metrics.jsonl"))]
    ref = [json.loads(ln) for ln in open(os.path.join(tmp_path / "single", "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, ref):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert sorted(os.listdir(os.path.join(out, "samples"))) == ["step_000002.png", "step_000004.png"]
