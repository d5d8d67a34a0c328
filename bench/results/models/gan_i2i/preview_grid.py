"""Preview grid of a trained checkpoint on held-out data, 4x nearest-upscaled: python grid.py MODEL RUN OUT.png"""
import sys
import torch
import torch.nn.functional as F
from genkernels import data, models
from genkernels.train import save_grid

name, run, out = sys.argv[1:4]
model = models.load(run, name=name).eval()
c = model.config
test = data.load(c.data, "test", c.image_size)
batch = {k: v[:16] for k, v in test.items()}
images = model.preview(batch, torch.Generator().manual_seed(0))
save_grid(F.interpolate(images, scale_factor=4, mode="nearest"), out, pad=4)
print(out)
