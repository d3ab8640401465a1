/**
 * Target architectures: named shapes and weight counts, and every registered target runs a
 * forward and backward through the SuperNet on its input size.
 */
import assert from "node:assert/strict";
import { read, tensorFrom } from "../src/gpu/tensor.ts";
import { run } from "../src/gpu/kernel.ts";
import { PlainNet, SuperNet, superNetConfig } from "../src/model/supernet.ts";
import {
  largestActivation,
  makeTarget,
  TARGETS,
  weightCount,
  weightShapes,
} from "../src/model/target.ts";
import { Tape } from "../src/tape.ts";
import { targetBackwardReference, targetReference } from "./reference/model.ts";
import { assertClose, finiteDifference, getGpu, uniform } from "./util.ts";

Deno.test("seed_cnn has the seed's 37,165 weights on 32x32 RGB and named PyTorch shapes", () => {
  const spec = makeTarget("seed_cnn", { inputShape: [3, 32, 32] });
  assert.equal(weightCount(spec), 37165);
  const shapes = Object.fromEntries(weightShapes(spec).map((w) => [w.name, w.shape]));
  assert.deepEqual(shapes["conv1.weight"], [16, 3, 5, 5]);
  assert.deepEqual(shapes["conv4.weight"], [16, 16, 5, 5]);
  assert.deepEqual(shapes["fc1.weight"], [100, 64]);
  assert.deepEqual(shapes["fc3.weight"], [1, 100]);
  // 28x28 grayscale: spatial 14, 7, 4, 2, so the same 64 features.
  const mnist = makeTarget("seed_cnn", { inputShape: [1, 28, 28] });
  assert.equal(weightCount(mnist), 37165 - 2 * 16 * 25);
});

Deno.test("largestActivation is the largest tensor a forward records, per image", async () => {
  // conv4 keeps 28x28 through its first 3x3 convolution: width x 28 x 28.
  const conv4 = makeTarget("conv4", { inputShape: [1, 28, 28], width: 16, outputs: 5 });
  assert.equal(largestActivation(conv4), 16 * 28 * 28);
  // seed_cnn halves 32x32 with its first stride-2 convolution: 16 x 16 x 16 > the 3 x 32 x 32 input.
  assert.equal(largestActivation(makeTarget("seed_cnn", { inputShape: [3, 32, 32] })), 16 ** 3);
  // An MLP on a large input: the input itself.
  assert.equal(largestActivation(makeTarget("mlp", { inputShape: [3, 32, 32] })), 3 * 32 * 32);
  // The same number from the tensors a real forward records (batch of B = 5 images).
  class Recording extends Tape {
    readonly shapes: (readonly number[])[] = [];
    override scratch(shape: readonly number[]) {
      this.shapes.push(shape);
      return super.scratch(shape);
    }
  }
  const gpu = await getGpu();
  const inputShape: [number, number, number] = [1, 16, 16];
  const net = SuperNet.create(
    gpu,
    superNetConfig({
      target: "conv4",
      width: 4,
      inputShape,
      outputs: 3,
      tasks: 1,
      generator: { zDim: 4 },
    }),
  );
  const tape = new Recording(gpu);
  const x = tensorFrom(gpu, [1, 5, ...inputShape], uniform(5 * 256, 3));
  const taskIndices = tensorFrom(gpu, [1], new Uint32Array([0]));
  net.forward(tape, { x, taskIndices });
  const perImage = tape.shapes.filter((s) => s.length >= 3 && s[0] === 1 && s[1] === 5)
    .map((s) => s.slice(2).reduce((a, b) => a * b, 1));
  const spec = makeTarget("conv4", { inputShape, width: 4, outputs: 3 });
  assert.equal(largestActivation(spec), Math.max(256, ...perImage));
  assert.ok(perImage.length >= 8, `recorded ${perImage.length} activations`);
  tape.destroy();
  net.destroy();
  x.destroy();
  taskIndices.destroy();
});

Deno.test("an unknown target is rejected with the valid names", () => {
  assert.throws(() => makeTarget("resnet", { inputShape: [3, 32, 32] }), /valid targets: seed_cnn/);
});

Deno.test("every target runs forward and backward through the generator", async () => {
  const gpu = await getGpu();
  for (const target of TARGETS) {
    const inputShape: [number, number, number] = [3, 16, 16];
    const net = SuperNet.create(
      gpu,
      superNetConfig({ target, inputShape, tasks: 2, generator: { zDim: 4 } }),
    );
    const T = 2;
    const B = 2;
    const x = tensorFrom(gpu, [T, B, ...inputShape], uniform(T * B * 3 * 16 * 16, 5));
    const tasks = tensorFrom(gpu, [T], new Uint32Array([1, 0]));
    const grads = { params: net.params.twin(), z: net.z.twin() };
    const tape = new Tape(gpu);
    const logits = net.forward(tape, { x, taskIndices: tasks, grads });
    assert.deepEqual(logits.shape, [T, B, 1], target);
    const dLogits = tensorFrom(gpu, [T, B, 1], new Float32Array(T * B).fill(1));
    tape.buildBackward(logits, dLogits);
    run(gpu, [...tape.forward, ...tape.backward]);
    const out = await read(gpu, logits.tensor);
    const dz = await read(gpu, grads.z.flat);
    assert.ok(out.every(Number.isFinite), `${target}: logits ${out}`);
    assert.ok(dz.some((v) => v !== 0) && dz.every(Number.isFinite), `${target}: dz`);
    tape.destroy();
    for (const t of [x, tasks, dLogits]) t.destroy();
    grads.params.destroy();
    grads.z.destroy();
    net.destroy();
  }
});

Deno.test("conv4 (conv, batch norm, ReLU, max-pool; N-way head) matches the CPU reference", async () => {
  const gpu = await getGpu();
  const T = 2;
  const B = 3;
  const inputShape: [number, number, number] = [1, 16, 16];
  const net = new PlainNet(gpu, {
    target: "conv4",
    width: 3,
    inputShape,
    outputs: 4,
    slope: 0.01,
    seed: 9,
    tasks: T,
  });
  assert.deepEqual(
    weightShapes(net.spec).map((w) => w.name).slice(0, 4),
    ["conv1.weight", "conv1.bias", "norm1.weight", "norm1.bias"],
  );
  const xValues = uniform(T * B * 256, 11);
  const x = tensorFrom(gpu, [T, B, ...inputShape], xValues);
  // Slot 0 reads set 1 and slot 1 reads set 0: the sets are gathered by task index.
  const order = [1, 0];
  const taskIndices = tensorFrom(gpu, [T], Uint32Array.from(order));
  const grads = net.params.twin();
  const tape = new Tape(gpu);
  const logits = net.forward(tape, { x, taskIndices, grads });
  assert.deepEqual(logits.shape, [T, B, 4]);
  const r = uniform(T * B * 4, 12);
  const dLogits = tensorFrom(gpu, [T, B, 4], r);
  tape.buildBackward(logits, dLogits);
  run(gpu, [...tape.forward, ...tape.backward]);
  const stored = new Map<string, Float32Array>();
  for (const e of net.params.entries) stored.set(e.name, await read(gpu, e.tensor));
  // The reference sees the sets in slot order.
  const weights = new Map([...stored].map(([name, all]) => {
    const per = all.length / T;
    const swapped = new Float64Array(all.length);
    order.forEach((from, t) => swapped.set(all.subarray(from * per, (from + 1) * per), t * per));
    return [name, swapped];
  }));
  const trace = targetReference(net.spec, { weights, x: xValues, tasks: T });
  assertClose(await read(gpu, logits.tensor), trace.logits, { rtol: 1e-3, atol: 1e-4 });
  const want = targetBackwardReference(net.spec, { weights, trace, dLogits: r });
  for (const e of net.params.entries) {
    const got = await read(gpu, grads.get(e.name));
    const per = got.length / T;
    // Slot t's gradient lands in the set it read.
    const ref = want.weights.get(e.name)!;
    const back = new Float64Array(got.length);
    order.forEach((from, t) => back.set(ref.subarray(t * per, (t + 1) * per), from * per));
    assertClose(got, back, { rtol: 2e-3, atol: 2e-4, label: e.name });
  }
  // The reference backward itself against finite differences of the reference forward.
  const loss = (name: string) => (v: Float64Array) => {
    const t = targetReference(net.spec, {
      weights: new Map([...weights, [name, v]]),
      x: xValues,
      tasks: T,
    });
    return t.logits.reduce((a, y, i) => a + y * r[i]!, 0);
  };
  for (const name of ["conv1.weight", "norm2.weight", "norm3.bias", "fc1.weight"]) {
    const at = [0, 5, weights.get(name)!.length - 1];
    const fd = finiteDifference(loss(name), weights.get(name)!, { at, eps: 1e-4 });
    const g = want.weights.get(name)!;
    for (const i of at) {
      assert.ok(Math.abs(fd[i]! - g[i]!) <= 1e-4 + 1e-3 * Math.abs(g[i]!), `${name}[${i}]`);
    }
  }
  tape.destroy();
  for (const t of [x, taskIndices, dLogits]) t.destroy();
  grads.destroy();
  net.destroy();
});
