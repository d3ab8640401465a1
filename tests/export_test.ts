import assert from "node:assert/strict";
import { readMany } from "../src/gpu/tensor.ts";
import {
  describeArchitecture,
  type ExportedArchitecture,
  exportTaskNetwork,
  generateWeights,
} from "../src/export/mod.ts";
import { SuperNet, superNetConfig } from "../src/model/supernet.ts";
import { makeTarget } from "../src/model/target.ts";
import { loadSafetensors } from "../src/safetensors.ts";
import { generatorReference, targetReference } from "./reference/model.ts";
import { assertClose, getGpu, uniform } from "./util.ts";

const gpu = await getGpu();

/** A small SuperNet (seed_cnn on 1x12x12, one hidden generator layer) with initial values. */
function smallNet(): SuperNet {
  return SuperNet.create(
    gpu,
    superNetConfig({
      target: "seed_cnn",
      inputShape: [1, 12, 12],
      tasks: 3,
      seed: 3,
      generator: {
        zDim: 6,
        hidden: [10],
        hiddenActivation: "leaky_relu",
        output: "tanh",
        outputScale: 1,
      },
    }),
  );
}

Deno.test("exported weights and architecture read back as the generator's output", async () => {
  const net = smallNet();
  const dir = await Deno.makeTempDir({ prefix: "export_test_" });
  try {
    const z = uniform(6, 61);
    const paths = await exportTaskNetwork(gpu, net, z, dir, { name: "task2" });
    assert.equal(paths.weights, `${dir}/task2.safetensors`);
    assert.equal(paths.architecture, `${dir}/task2.json`);
    const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assert.deepEqual(names, ["task2.json", "task2.safetensors"], "no temporary files are left");

    // The same numbers as the generator's output for z, on the GPU and in the CPU reference.
    const { tensors } = await loadSafetensors(paths.weights);
    const generated = await generateWeights(gpu, net, z);
    const arenaValues = await readMany(gpu, net.params.entries.map((e) => e.tensor));
    const params = new Map(net.params.entries.map((e, i) => [e.name, arenaValues[i]!]));
    const want = generatorReference(net.config.generator, {
      params,
      z,
      targetWeights: net.weights,
      slope: net.config.slope,
    });
    assert.deepEqual([...tensors.keys()], net.weights.map((w) => w.name));
    for (const w of net.weights) {
      const t = tensors.get(w.name)!;
      assert.deepEqual(t.shape, [...w.shape], `shape of ${w.name}`);
      assert.ok(t.data instanceof Float32Array, `${w.name} is F32`);
      assert.deepEqual(t.data, generated.get(w.name), `${w.name} equals generateWeights`);
      assertClose(t.data, want.weights.get(w.name)!, { rtol: 1e-4, atol: 1e-6, label: w.name });
    }

    // The JSON parses, and its layers have the shapes of the tensors.
    const arch: ExportedArchitecture = JSON.parse(await Deno.readTextFile(paths.architecture));
    assert.equal(arch.format, "supernet-task-network");
    assert.equal(arch.target, "seed_cnn");
    assert.equal(arch.weightsFile, "task2.safetensors");
    assert.deepEqual(arch.inputShape, [1, 12, 12]);
    assert.equal(arch.outputs, 1);
    assertClose(arch.z, z, { rtol: 0, atol: 0, label: "z" });
    assert.match(arch.torch, /nn\.Conv2d\(1, 16, 5, stride=2, padding=2\)/);
    assert.match(arch.torch, /load_state_dict/);
    let [c, h, wd] = arch.inputShape;
    let features = 0;
    for (const layer of arch.layers) {
      if (layer.kind === "conv") {
        assert.equal(layer.inChannels, c);
        assert.deepEqual(tensors.get(`${layer.name}.weight`)!.shape, [
          layer.outChannels,
          layer.inChannels,
          layer.kernel,
          layer.kernel,
        ]);
        assert.deepEqual(tensors.get(`${layer.name}.bias`)!.shape, [layer.outChannels]);
        assert.equal(layer.activation, "leaky_relu");
        assert.equal(layer.slope, 0.01);
        c = layer.outChannels;
        h = Math.floor((h + 2 * layer.padding - layer.kernel) / layer.stride) + 1;
        wd = Math.floor((wd + 2 * layer.padding - layer.kernel) / layer.stride) + 1;
      } else if (layer.kind === "flatten") {
        features = c * h * wd;
      } else {
        assert.equal(layer.inFeatures, features);
        assert.deepEqual(tensors.get(`${layer.name}.weight`)!.shape, [
          layer.outFeatures,
          layer.inFeatures,
        ]);
        assert.deepEqual(tensors.get(`${layer.name}.bias`)!.shape, [layer.outFeatures]);
        features = layer.outFeatures;
      }
      if (layer.kind !== "flatten") {
        for (const suffix of ["weight", "bias"]) {
          const key: string = `${layer.name}.${suffix}`;
          assert.deepEqual(arch.weights[key], tensors.get(key)!.shape, key);
        }
      }
    }
    assert.equal(features, arch.outputs);
    assert.equal(Object.keys(arch.weights).length, tensors.size);

    // The exported tensors, used as plain PyTorch-layout weights, classify like the SuperNet
    // would: the reference target forward on them equals the one on the generated weights.
    const spec = makeTarget(arch.target, { inputShape: arch.inputShape, outputs: arch.outputs });
    const x = uniform(2 * 144, 62);
    const fromFile = targetReference(spec, {
      weights: new Map([...tensors].map(([n, t]) => [n, t.data])),
      x,
      tasks: 1,
    });
    const fromGenerator = targetReference(spec, { weights: want.weights, x, tasks: 1 });
    assertClose(fromFile.logits, fromGenerator.logits, { rtol: 1e-4, atol: 1e-6, label: "logits" });
  } finally {
    await Deno.remove(dir, { recursive: true });
    net.destroy();
  }
});

Deno.test("export rejects a z of the wrong size and unsafe names", async () => {
  const net = smallNet();
  try {
    await assert.rejects(
      () => generateWeights(gpu, net, new Float32Array(5)),
      (e: Error) => e instanceof RangeError && /6 values, got 5/.test(e.message),
    );
    await assert.rejects(
      () => exportTaskNetwork(gpu, net, new Float32Array(6), "/tmp", { name: "../x" }),
      RangeError,
    );
  } finally {
    net.destroy();
  }
});

Deno.test("architecture description names activations and slopes of every layer", () => {
  const spec = makeTarget("mlp", { inputShape: [1, 4, 4], hidden: [8], slope: 0.2 });
  const arch = describeArchitecture(spec, {
    name: "m",
    weights: new Map(),
    weightsFile: "m.safetensors",
    z: new Float32Array([1, 0]),
  });
  assert.deepEqual(arch.layers, [
    { kind: "flatten" },
    {
      kind: "linear",
      name: "fc1",
      inFeatures: 16,
      outFeatures: 8,
      activation: "leaky_relu",
      slope: 0.2,
    },
    { kind: "linear", name: "fc2", inFeatures: 8, outFeatures: 1, activation: "identity" },
  ]);
  assert.match(
    arch.torch,
    /x = torch\.flatten\(x, 1\); x = F\.leaky_relu\(fc1\(x\), 0\.2\); x = fc2\(x\);/,
  );
});
