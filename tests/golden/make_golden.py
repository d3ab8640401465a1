"""Writes tests/golden/seed_cnn.safetensors: a PyTorch run of the SuperNet's generator + seed_cnn
with fixed weights and inputs (inputs, generator weights, task vectors, logits, loss and every
gradient), which tests/golden_test.ts checks our WebGPU implementation against.

Run by hand with Debian's PyTorch:  apt-get install -y python3-torch && /usr/bin/python3 tests/golden/make_golden.py
Layout conventions are PyTorch's: conv weights [O, C, k, k], linear weights [out, in]; the generator
head for a target tensor of n numbers is W [d, n] and b [n], generated = tanh(z @ W + b).
"""
import json
import os
import struct

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
D = 4  # z size (small, to keep the file small)
N = 3  # task vectors in the table
TASK_INDICES = [2, 0]  # the tasks of this step, T = 2
B = 3  # images per task
C, H, W = 1, 28, 28
SLOPE = 0.01

# seed_cnn on 28x28x1: four 5x5 stride-2 convs (padding 2) with 16 channels, 64 -> 100 -> 100 -> 1.
shapes = []
cin = C
for i in range(4):
    shapes.append((f"conv{i + 1}.weight", (16, cin, 5, 5)))
    shapes.append((f"conv{i + 1}.bias", (16,)))
    cin = 16
for i, (fin, fout) in enumerate([(64, 100), (100, 100), (100, 1)]):
    shapes.append((f"fc{i + 1}.weight", (fout, fin)))
    shapes.append((f"fc{i + 1}.bias", (fout,)))

params = {}
for name, shape in shapes:
    n = 1
    for s in shape:
        n *= s
    params[f"head.{name}.weight"] = (torch.rand(D, n, dtype=torch.float64) * 2 - 1) * 0.1
    params[f"head.{name}.bias"] = (torch.rand(n, dtype=torch.float64) * 2 - 1) * 0.05
z = torch.randn(N, D, dtype=torch.float64) * 0.5
x = torch.randn(len(TASK_INDICES), B, C, H, W, dtype=torch.float64)
labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)

for p in params.values():
    p.requires_grad_(True)
z.requires_grad_(True)

zs = z[TASK_INDICES]
gen = {}
for name, shape in shapes:
    w = torch.tanh(zs @ params[f"head.{name}.weight"] + params[f"head.{name}.bias"])
    gen[name] = w.reshape(len(TASK_INDICES), *shape)

logits = []
for t in range(len(TASK_INDICES)):
    h = x[t]
    for i in range(4):
        h = F.leaky_relu(F.conv2d(h, gen[f"conv{i + 1}.weight"][t], gen[f"conv{i + 1}.bias"][t], stride=2, padding=2), SLOPE)
    h = h.flatten(1)
    h = F.leaky_relu(F.linear(h, gen["fc1.weight"][t], gen["fc1.bias"][t]), SLOPE)
    h = F.leaky_relu(F.linear(h, gen["fc2.weight"][t], gen["fc2.bias"][t]), SLOPE)
    logits.append(F.linear(h, gen["fc3.weight"][t], gen["fc3.bias"][t]))
logits = torch.stack(logits)  # [T, B, 1]
per_task = F.binary_cross_entropy_with_logits(logits.squeeze(-1), labels, reduction="none").mean(1)
loss = per_task.mean()
loss.backward()

out = {
    "x": x, "labels": labels, "z": z.detach(), "logits": logits.detach(), "loss": loss.detach().reshape(1),
    "per_task": per_task.detach(), "grad.z": z.grad,
}
for name, p in params.items():
    out[name] = p.detach()
    out[f"grad.{name}"] = p.grad

header = {"__metadata__": {"task_indices": json.dumps(TASK_INDICES), "slope": str(SLOPE), "torch": torch.__version__}}
blobs = []
offset = 0
for name, t in out.items():
    data = t.to(torch.float32).contiguous().numpy().tobytes()
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
h = json.dumps(header)
h += " " * ((8 - len(h) % 8) % 8)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_cnn.safetensors")
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h.encode())
    for b in blobs:
        f.write(b)
print(f"wrote {path}: loss {loss.item():.6f}, logits {logits.detach().flatten().tolist()}")
