"""`genkernels models | train | sample | eval`: a round trip on a tiny test model, and every bad input
ending in one line on stderr with a non-zero status (never a traceback, never a lost checkpoint)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from genkernels import checkpoint, cli, models

import tiny_model


class OtherTiny(tiny_model.TinyTest):
    name = "tiny-test-other"


@pytest.fixture(autouse=True)
def tiny():
    models.register(tiny_model.TinyTest)
    models.register(OtherTiny)
    yield
    models.unregister("tiny-test")
    models.unregister("tiny-test-other")


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def fails(capsys, match, *argv):
    rc, out, err = run(capsys, *argv)
    assert rc != 0, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    return lines[0]


TRAIN = ("--preset", "tiny", "--steps", 3, "--no-progress", "--log-every", 1)


def test_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    rc, text, _ = run(capsys, "models")
    assert rc == 0 and "tiny-test " in text and "test-only noisy autoencoder" in text and "tiny, digits" in text
    rc, text, err = run(capsys, "train", "tiny-test", *TRAIN, "--out", out, "--set", "hidden=4", "--seed", 1)
    assert rc == 0, err
    assert "step 3" in text and str(out) in text
    cfg = json.load(open(out / "config.json"))
    assert cfg["model"] == "tiny-test" and cfg["preset"] == "tiny" and cfg["config"]["hidden"] == 4
    assert len(open(out / "metrics.jsonl").readlines()) == 3
    assert os.path.exists(out / "samples" / "step_000003.png")

    rc, text, err = run(capsys, "train", "tiny-test", "--steps", 5, "--no-progress", "--out", out, "--resume")
    assert rc == 0, err
    assert checkpoint.read(str(out)).state["step"] == 5

    png = tmp_path / "s.png"
    rc, text, err = run(capsys, "sample", "tiny-test", "--checkpoint", out, "--num", 6, "--out", png, "--scale", 0.5)
    assert rc == 0, err
    from PIL import Image
    assert Image.open(png).size == (3 * 10 + 2, 2 * 10 + 2)       # 6 images of 8x8, 3 per row
    a = png.read_bytes()
    run(capsys, "sample", "tiny-test", "--checkpoint", out, "--num", 6, "--out", png, "--scale", 0.5)
    assert png.read_bytes() == a                                   # same seed, same picture
    run(capsys, "sample", "tiny-test", "--checkpoint", out, "--num", 6, "--out", png, "--scale", 0.5, "--seed", 2)
    assert png.read_bytes() != a

    rc, text, err = run(capsys, "eval", "tiny-test", "--checkpoint", out, "--num", 50)
    assert rc == 0, err
    report = json.loads(text)
    assert report["model"] == "tiny-test" and report["step"] == 5 and report["num"] == 50
    psnr = report["metrics"]["psnr"]
    assert psnr["floor"] is None and psnr["value"] > psnr["ceiling"]


def test_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "tiny-test", *TRAIN, "--out", out)[0] == 0
    good = (out / checkpoint.WEIGHTS).read_bytes()

    fails(capsys, "unknown model 'nope'", "train", "nope", "--out", tmp_path / "x")
    fails(capsys, "unknown model 'nope'", "sample", "nope", "--checkpoint", out)
    fails(capsys, "unknown model 'nope'", "eval", "nope", "--checkpoint", out)
    fails(capsys, "unknown preset 'huge'", "train", "tiny-test", "--preset", "huge", "--out", tmp_path / "x")
    fails(capsys, "no config key 'width'", "train", "tiny-test", "--set", "width=3", "--out", tmp_path / "x")
    fails(capsys, "--set hidden: expected int", "train", "tiny-test", "--set", "hidden=wide", "--out", tmp_path / "x")
    fails(capsys, "key=value", "train", "tiny-test", "--set", "hidden", "--out", tmp_path / "x")
    fails(capsys, "unknown backend", "train", "tiny-test", *TRAIN, "--backend", "fastest", "--out", tmp_path / "x")
    fails(capsys, "--steps", "train", "tiny-test", "--steps", "many")                       # argparse's own
    fails(capsys, "already holds a checkpoint", "train", "tiny-test", *TRAIN, "--out", out)
    fails(capsys, "was trained with hidden=8", "train", "tiny-test", "--steps", 6, "--out", out, "--resume",
          "--set", "hidden=16")
    fails(capsys, "holds a checkpoint of model 'tiny-test', not 'tiny-test-other'",
          "train", "tiny-test-other", "--steps", 6, "--out", out, "--resume")
    fails(capsys, "holds a checkpoint of model 'tiny-test', not 'tiny-test-other'",
          "sample", "tiny-test-other", "--checkpoint", out)
    fails(capsys, "holds a checkpoint of model 'tiny-test', not 'tiny-test-other'",
          "eval", "tiny-test-other", "--checkpoint", out)
    fails(capsys, "does not exist", "sample", "tiny-test", "--checkpoint", tmp_path / "missing")
    fails(capsys, "does not exist", "train", "tiny-test", "--out", tmp_path / "missing", "--resume")
    fails(capsys, "--num must be >= 1", "sample", "tiny-test", "--checkpoint", out, "--num", 0)
    fails(capsys, "required", "eval", "tiny-test")
    assert (out / checkpoint.WEIGHTS).read_bytes() == good

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (checkpoint.CONFIG, checkpoint.STATE):
        (broken / name).write_bytes((out / name).read_bytes())
    for damage in (good[: len(good) // 3], good[:-100], b"{}" + good[2:]):
        (broken / checkpoint.WEIGHTS).write_bytes(damage)
        fails(capsys, "truncated or corrupt", "eval", "tiny-test", "--checkpoint", broken)
        fails(capsys, "truncated or corrupt", "train", "tiny-test", "--out", broken, "--resume")
        assert (broken / checkpoint.WEIGHTS).read_bytes() == damage


def test_entry_point_without_traceback(tmp_path):
    """The installed command path (a fresh interpreter): bad input is one line, status 2."""
    r = subprocess.run([sys.executable, "-m", "genkernels.cli", "sample", "nope", "--checkpoint", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "unknown model 'nope'" in r.stderr
