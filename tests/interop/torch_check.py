"""Rebuild an exported SuperNet task network in PyTorch from its JSON description alone.

Usage: python3 torch_check.py DESCRIPTION.json IMAGES.f32 LABELS.u8

IMAGES.f32 holds float32 images [N, C, H, W] (8-bit pixel values / 255, as the description's
"preprocessing" says); LABELS.u8 one byte per image (0 or 1). Prints one JSON object: the
logits, the predicted labels and the accuracy. The module applies the recorded mean and std
itself, so raw [0, 1] images go in, as they would for a user following the JSON.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_safetensors(path):
    """Reads a safetensors file of F32 tensors (the format is 8 bytes of header size, JSON, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype="<f4").reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors


class TaskNet(nn.Module):
    """The layers of the description, with its input normalisation first."""

    def __init__(self, description):
        super().__init__()
        pre = description["preprocessing"]
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, -1, 1, 1), persistent=False)
        self.steps = []
        for layer in description["layers"]:
            if layer["kind"] == "conv":
                module = nn.Conv2d(
                    layer["inChannels"],
                    layer["outChannels"],
                    layer["kernel"],
                    stride=layer["stride"],
                    padding=layer["padding"],
                )
            elif layer["kind"] == "linear":
                module = nn.Linear(layer["inFeatures"], layer["outFeatures"])
            else:
                self.steps.append(("flatten", None, None, None))
                continue
            setattr(self, layer["name"], module)
            self.steps.append((layer["kind"], layer["name"], layer["activation"], layer.get("slope")))

    def forward(self, x):
        x = (x - self.mean) / self.std
        for kind, name, activation, slope in self.steps:
            if kind == "flatten":
                x = torch.flatten(x, 1)
                continue
            x = getattr(self, name)(x)
            if activation == "leaky_relu":
                x = F.leaky_relu(x, slope)
            elif activation == "relu":
                x = F.relu(x)
            elif activation == "tanh":
                x = torch.tanh(x)
            elif activation == "sigmoid":
                x = torch.sigmoid(x)
            elif activation != "identity":
                raise ValueError(f"unknown activation {activation}")
        return x


def main():
    description_path, images_path, labels_path = sys.argv[1:4]
    with open(description_path) as f:
        description = json.load(f)
    folder = description_path.rsplit("/", 1)[0] if "/" in description_path else "."
    model = TaskNet(description)
    model.load_state_dict(load_safetensors(f"{folder}/{description['weightsFile']}"), strict=True)
    model.eval()
    shape = description["preprocessing"]["inputShape"]
    images = np.fromfile(images_path, dtype="<f4").reshape([-1, *shape])
    labels = np.fromfile(labels_path, dtype=np.uint8)
    with torch.no_grad():
        logits = model(torch.from_numpy(images))[:, 0].double().numpy()
    predicted = (logits > 0).astype(np.uint8)
    print(json.dumps({
        "logits": logits.tolist(),
        "predicted": predicted.tolist(),
        "accuracy": float((predicted == labels).mean()),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
