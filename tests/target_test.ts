/**
 * Target architectures: named shapes and weight counts, and every registered target runs a
 * forward and backward through the SuperNet on its input size.
 */
import assert from "node:assert/strict";
import { read, tensorFrom } from "../src/gpu/tensor.ts";
import { run } from "../src/gpu/kernel.ts";
import { SuperNet, superNetConfig } from "../src/model/supernet.ts";
import { makeTarget, TARGETS, weightCount, weightShapes } from "../src/model/target.ts";
import { Tape } from "../src/tape.ts";
import { getGpu, uniform } from "./util.ts";

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
