"""The SuperNet training step of `deno task bench` written with PyTorch on the CPU, for the ratio
ours / theirs: generator heads tanh(z @ W + b) for T tasks, then seed_cnn (four 5x5 stride-2 convs
with 16 channels and leaky ReLU, 64 -> 100 -> 100 -> 1) on each task's B images of 3x32x32, sigmoid
cross-entropy, backward, Adam. PyTorch has no batched per-task weights, so the target networks run
as grouped convolutions (one group per task) and batched matmuls, the fastest form we found.

Usage: python3 src/peers/torch_step.py T B [DEVICE]
  -> prints "images_per_second torch_version threads device_name"
DEVICE is "cpu" (default) or "cuda"; on CUDA every timed step ends with a synchronisation.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

# Debian's build starts with one thread; use every core, as a user would.
torch.set_num_threads(os.cpu_count() or 1)
T, B = int(sys.argv[1]), int(sys.argv[2])
device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit("CUDA was asked for but torch.cuda.is_available() is False")
D = 100
shapes = [("conv1.weight", (16, 3, 5, 5)), ("conv1.bias", (16,))]
for i in range(2, 5):
    shapes += [(f"conv{i}.weight", (16, 16, 5, 5)), (f"conv{i}.bias", (16,))]
for i, (fin, fout) in enumerate([(64, 100), (100, 100), (100, 1)]):
    shapes += [(f"fc{i + 1}.weight", (fout, fin)), (f"fc{i + 1}.bias", (fout,))]
heads = {}
for name, shape in shapes:
    n = 1
    for s in shape:
        n *= s
    heads[name] = (torch.nn.Parameter(torch.randn(D, n, device=device) * 0.01), torch.nn.Parameter(torch.zeros(n, device=device)))
z = torch.nn.Parameter(torch.eye(T, D, device=device))
params = [p for pair in heads.values() for p in pair] + [z]
opt = torch.optim.Adam(params, lr=1e-3)
x = torch.randn(T, B, 3, 32, 32, device=device)
y = (torch.arange(T * B, device=device) % 2).float().reshape(T, B)


def step():
    opt.zero_grad()
    w = {name: torch.tanh(z @ W + b).reshape(T, *shape) for (name, shape), (W, b) in zip(shapes, heads.values())}
    h = x.transpose(0, 1).reshape(B, T * 3, 32, 32)
    for i in range(1, 5):
        wt = w[f"conv{i}.weight"]
        h = F.conv2d(h, wt.reshape(T * 16, wt.shape[2], 5, 5), w[f"conv{i}.bias"].reshape(-1), stride=2, padding=2, groups=T)
        h = F.leaky_relu(h, 0.01)
    h = h.reshape(B, T, 64).transpose(0, 1)  # [T, B, 64]
    for i in range(1, 4):
        h = torch.baddbmm(w[f"fc{i}.bias"].unsqueeze(1), h, w[f"fc{i}.weight"].transpose(1, 2))
        if i < 3:
            h = F.leaky_relu(h, 0.01)
    loss = F.binary_cross_entropy_with_logits(h.squeeze(-1), y)
    loss.backward()
    opt.step()




def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


step()
sync()
times = []
for _ in range(5):
    t = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - t)
times.sort()
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
print(T * B / times[2], torch.__version__, torch.get_num_threads(), name)
