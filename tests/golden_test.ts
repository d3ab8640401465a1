/**
 * PyTorch parity: tests/golden/seed_cnn.safetensors holds a float64 PyTorch forward and backward
 * of the generator + seed_cnn (written by tests/golden/make_golden.py, stored as f32): inputs,
 * generator weights, task vectors, logits, loss, per-task loss and every gradient. The WebGPU
 * SuperNet and the CPU reference (tests/reference/model.ts) are both checked against it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { run } from "../src/gpu/kernel.ts";
import { createTensor, readMany, tensorFrom, write } from "../src/gpu/tensor.ts";
import { generatorParams } from "../src/model/generator.ts";
import { SuperNet, superNetConfig } from "../src/model/supernet.ts";
import { makeTarget, weightShapes } from "../src/model/target.ts";
import { sigmoidCrossEntropy } from "../src/ops/loss.ts";
import { loadSafetensors, type NamedTensor } from "../src/safetensors.ts";
import { Tape } from "../src/tape.ts";
import { superNetReference } from "./reference/model.ts";
import { assertClose, getGpu } from "./util.ts";

const golden = await loadSafetensors(
  new URL("./golden/seed_cnn.safetensors", import.meta.url).pathname,
);

function tensor(name: string): NamedTensor {
  const t = golden.tensors.get(name);
  if (!t) throw new Error(`Golden file has no tensor '${name}'`);
  return t;
}

function values(name: string): Float32Array {
  return tensor(name).data as Float32Array;
}

/** Largest absolute value of an array. */
function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

const taskIndices: number[] = JSON.parse(golden.metadata.task_indices!);
const [T, B] = tensor("labels").shape as [number, number];
const config = superNetConfig({
  target: "seed_cnn",
  inputShape: [1, 28, 28],
  tasks: 3,
  slope: Number(golden.metadata.slope),
  generator: {
    zDim: 4,
    hidden: [],
    output: "tanh",
    outputScale: 1,
    hiddenActivation: "leaky_relu",
  },
});

// Tolerances of the WebGPU run (f32). Logits and losses: 1e-4 relative (measured on llvmpipe:
// 2.6e-6 on logits, 1e-7 on losses). Gradients are sums of thousands of f32 products, some of
// which cancel: 1e-3 relative plus 5e-5 of the tensor's largest gradient (measured: largest error
// 5.1e-6 of the largest gradient; 1.7e-4 relative on gradients above 1% of the largest).
const LOGIT_RTOL = 1e-4;
const GRAD_RTOL = 1e-3;
const GRAD_ATOL = 5e-5;

const spec = makeTarget(config.target, {
  inputShape: config.inputShape,
  outputs: config.outputs,
  slope: config.slope,
});
const targetWeights = weightShapes(spec);
const generatorShapes = generatorParams(config.generator, targetWeights);

Deno.test("golden file holds the tensors of the SuperNet's architecture", () => {
  assert.deepEqual(taskIndices, [2, 0]);
  assert.deepEqual(tensor("x").shape, [T, B, 1, 28, 28]);
  assert.deepEqual(tensor("z").shape, [3, 4]);
  for (const p of generatorShapes) {
    assert.deepEqual(tensor(p.name).shape, p.shape, p.name);
    assert.deepEqual(tensor(`grad.${p.name}`).shape, p.shape, `grad.${p.name}`);
  }
});

Deno.test("WebGPU SuperNet reproduces PyTorch's logits, loss and gradients", async () => {
  const gpu = await getGpu();
  const net = new SuperNet(gpu, config);
  for (const { name, tensor: t } of net.params.entries) {
    assert.deepEqual([...t.shape], tensor(name).shape, `shape of ${name}`);
    write(gpu, t, values(name));
  }
  write(gpu, net.z.get("z"), values("z"));
  const x = tensorFrom(gpu, [T, B, 1, 28, 28], values("x"));
  const indices = tensorFrom(gpu, [T], Uint32Array.from(taskIndices));
  const labels = tensorFrom(gpu, [T, B], values("labels"));
  const loss = createTensor(gpu, [1]);
  const perTask = createTensor(gpu, [T]);
  const grads = { params: net.params.twin(), z: net.z.twin() };
  const tape = new Tape(gpu);
  const logits = net.forward(tape, { x, taskIndices: indices, grads });
  const dLogits = tape.scratch(logits.shape);
  const lossDispatches = sigmoidCrossEntropy(gpu, logits.tensor.reshape([T, B]), labels, {
    perTask,
    loss,
    dLogits: dLogits.reshape([T, B]),
  });
  tape.buildBackward(logits, dLogits);
  run(gpu, [...tape.forward, ...lossDispatches, ...tape.backward]);

  const [gotLogits, gotLoss, gotPerTask, gotZ] = await readMany(gpu, [
    logits.tensor,
    loss,
    perTask,
    grads.z.get("z"),
  ]);
  assertClose(gotLogits!, values("logits"), { rtol: LOGIT_RTOL, atol: 0, label: "logits" });
  assertClose(gotLoss!, values("loss"), { rtol: LOGIT_RTOL, atol: 0, label: "loss" });
  assertClose(gotPerTask!, values("per_task"), { rtol: LOGIT_RTOL, atol: 0, label: "per task" });
  const wantZ = values("grad.z");
  assertClose(gotZ!, wantZ, {
    rtol: GRAD_RTOL,
    atol: GRAD_ATOL * maxAbs(wantZ),
    label: "grad.z",
  });
  const gotGrads = await readMany(gpu, grads.params.entries.map((e) => e.tensor));
  grads.params.entries.forEach(({ name }, i) => {
    const want = values(`grad.${name}`);
    assertClose(gotGrads[i]!, want, {
      rtol: GRAD_RTOL,
      atol: GRAD_ATOL * maxAbs(want),
      label: `grad.${name}`,
    });
  });
  tape.destroy();
  grads.params.destroy();
  grads.z.destroy();
  net.destroy();
  for (const t of [x, indices, labels, loss, perTask]) t.destroy();
});

Deno.test("CPU reference reproduces PyTorch's logits, loss and gradients", () => {
  const params = new Map(generatorShapes.map((p) => [p.name, values(p.name)]));
  const want = superNetReference({ spec, generator: config.generator, targetWeights }, {
    params,
    table: values("z"),
    taskIndices,
    x: values("x"),
    labels: values("labels"),
    backward: true,
  });
  // Both are float64, but the golden values were rounded to f32 after PyTorch computed them from
  // unrounded inputs (measured: logits 1.4e-7 relative, gradients 2e-7 of their largest value).
  assertClose(want.logits, values("logits"), { rtol: 1e-5, atol: 0, label: "reference logits" });
  assertClose([want.loss], values("loss"), { rtol: 1e-6, atol: 0, label: "reference loss" });
  assertClose(want.perTask, values("per_task"), { rtol: 1e-6, label: "reference per task" });
  const wantZ = values("grad.z");
  assertClose(want.grads!.table, wantZ, {
    rtol: 1e-4,
    atol: 2e-6 * maxAbs(wantZ),
    label: "reference grad.z",
  });
  for (const p of generatorShapes) {
    const g = values(`grad.${p.name}`);
    assertClose(want.grads!.params.get(p.name)!, g, {
      rtol: 1e-4,
      atol: 2e-6 * maxAbs(g),
      label: `reference grad.${p.name}`,
    });
  }
});
