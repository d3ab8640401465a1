"""The SuperNet training steps of `deno task bench` written with PyTorch, for the ratio
ours / theirs. PyTorch has no batched per-task weights, so the T target networks run as grouped
convolutions (one group per task) and batched matmuls, the fastest form we found.

Usage: python3 src/peers/torch_step.py T B [DEVICE]
  The seed_cnn step: generator heads tanh(z @ W + b) for T tasks, then seed_cnn (four 5x5
  stride-2 convs with 16 channels and leaky ReLU, 64 -> 100 -> 100 -> 1) on each task's B images
  of 3x32x32, sigmoid cross-entropy, backward, Adam.
  -> prints "images_per_second torch_version threads device_name"

Usage: python3 src/peers/torch_step.py described DESCRIPTION [DEVICE]
  The step of a SuperNet as the bench describes it in JSON (PeerStepDescription in
  src/peers/python.ts; the few-shot conv4 row): z [T, zDim] -> the generator's hidden layers ->
  one head per target weight tensor, scale * tanh(h @ W + b) -> T target networks (conv, batch
  norm with each task's own batch statistics, pool, flatten, linear) on B images per task; labels
  i % outputs; softmax cross-entropy (sigmoid for one output), mean over all T x B images;
  backward; Adam (PyTorch's defaults) on the generator and z. With "init" (a file of float32
  values: the generator's parameters in "params" order, then z, then the images x) and "steps",
  it runs that many steps from those values; otherwise one warm-up and 5 timed steps from random
  values.
  -> prints JSON {"seconds": median step seconds, "losses": [loss of each step], "version",
     "threads", "device"}

DEVICE is "cpu" (default) or "cuda"; on CUDA every timed step ends with a synchronisation.
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

# Debian's build starts with one thread; use every core, as a user would.
torch.set_num_threads(os.cpu_count() or 1)
# The batch norm's eps, as ours (src/ops/norm.ts).
NORM_EPS = 1e-5


def seed_cnn_step(T, B, device):
    """The seed_cnn step at T tasks x B images, as a function that runs one and returns its loss."""
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
        return loss.detach()

    return step


def activate(h, name, slope):
    """An activation of src/ops/activation.ts by its name."""
    if name == "relu":
        return F.relu(h)
    if name == "leaky_relu":
        return F.leaky_relu(h, slope)
    if name == "tanh":
        return torch.tanh(h)
    if name == "sigmoid":
        return torch.sigmoid(h)
    if name == "identity":
        return h
    sys.exit(f"unknown activation '{name}'")


def described_step(d, device):
    """The step `d` describes, as a function that runs one and returns its loss."""
    T, B = d["tasks"], d["batch"]
    C, H, W = d["input"]
    K = d["outputs"]
    slope = d["slope"]
    gen = d["generator"]
    z_shape = (T, gen["zDim"])
    x_shape = (T, B, C, H, W)
    if "init" in d:
        with open(d["init"], "rb") as f:
            flat = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
        values, at = [], 0
        for shape in [p["shape"] for p in d["params"]] + [z_shape, x_shape]:
            n = 1
            for s in shape:
                n *= s
            values.append(flat[at:at + n].reshape(shape).to(device))
            at += n
        if at != flat.numel():
            sys.exit(f"init holds {flat.numel()} values, the description {at}")
        *tensors, z0, x = values
    else:
        # Random values: the time of a step does not depend on them.
        tensors = [torch.randn(*p["shape"], device=device) * (0.01 if len(p["shape"]) > 1 else 0) for p in d["params"]]
        z0 = torch.randn(*z_shape, device=device) / gen["zDim"] ** 0.5
        x = torch.rand(*x_shape, device=device) * 2 - 1
    P = {p["name"]: torch.nn.Parameter(t.clone()) for p, t in zip(d["params"], tensors)}
    z = torch.nn.Parameter(z0.clone())
    opt = torch.optim.Adam([*P.values(), z], lr=d["lr"])
    y = (torch.arange(T * B, device=device) % K).reshape(T, B)

    def step():
        opt.zero_grad()
        h = z
        for i in range(len(gen["hidden"])):
            h = activate(torch.addmm(P[f"hidden{i + 1}.bias"], h, P[f"hidden{i + 1}.weight"]), gen["hiddenActivation"], slope)
        w = {}
        for head in d["heads"]:
            u = torch.addmm(P[f"head.{head['name']}.bias"], h, P[f"head.{head['name']}.weight"])
            u = torch.tanh(u) if gen["output"] == "tanh" else u
            w[head["name"]] = (u * head["scale"] if head["scale"] != 1 else u).reshape(T, *head["shape"])
        # Task t's channels are group t of [B, T * C, H, W] until the flatten, then [T, B, F]. On
        # the CPU in channels-last layout: with oneDNN's grouped convolutions in the default
        # layout (their backward above all) a step took 1.6x the CPU time (PyTorch 2.13, 2 threads).
        a = x.transpose(0, 1).reshape(B, T * C, H, W)
        if device.type == "cpu":
            a = a.contiguous(memory_format=torch.channels_last)
        for layer in d["layers"]:
            kind = layer.get("kind")
            if kind == "conv":
                wt = w[f"{layer['name']}.weight"]
                a = F.conv2d(a, wt.reshape(T * wt.shape[1], *wt.shape[2:]), w[f"{layer['name']}.bias"].reshape(-1), stride=layer["stride"], padding=layer["padding"], groups=T)
                a = activate(a, layer["activation"], slope)
            elif kind == "norm":
                # Statistics per (task, channel) over the task's batch; the scale is stored as an
                # offset from 1 (src/model/target.ts).
                scale = 1 + w[f"{layer['name']}.weight"].reshape(-1)
                a = F.batch_norm(a, None, None, scale, w[f"{layer['name']}.bias"].reshape(-1), training=True, eps=NORM_EPS)
                a = activate(a, layer["activation"], slope)
            elif kind == "pool":
                a = F.max_pool2d(a, 2)
            elif kind == "flatten":
                a = a.reshape(B, T, -1).transpose(0, 1)
            elif kind == "linear":
                a = torch.baddbmm(w[f"{layer['name']}.bias"].unsqueeze(1), a, w[f"{layer['name']}.weight"].transpose(1, 2))
                a = activate(a, layer["activation"], slope)
            else:
                sys.exit(f"unknown layer kind '{kind}'")
        if K == 1:
            loss = F.binary_cross_entropy_with_logits(a.reshape(T, B), y.float())
        else:
            loss = F.cross_entropy(a.reshape(T * B, K), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device, warmup, repeats):
    """Seconds of each of `repeats` steps after `warmup` untimed ones, and every step's loss."""
    losses, times = [], []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        losses.append(step())
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times, [float(l) for l in losses]


def main():
    described = sys.argv[1] == "described"
    device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA was asked for but torch.cuda.is_available() is False")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if not described:
        T, B = int(sys.argv[1]), int(sys.argv[2])
        times, _ = timed(seed_cnn_step(T, B, device), device, 1, 5)
        times.sort()
        print(T * B / times[2], torch.__version__, torch.get_num_threads(), name)
        return
    d = json.loads(sys.argv[2])
    step = described_step(d, device)
    times, losses = timed(step, device, 0, d.get("steps", 1)) if "init" in d else timed(step, device, 1, 5)
    times.sort()
    print(json.dumps({
        "seconds": times[len(times) // 2],
        "losses": losses,
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": name,
    }))


main()
