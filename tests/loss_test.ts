import assert from "node:assert/strict";
import { run } from "../src/gpu/kernel.ts";
import { createTensor, read, type Tensor } from "../src/gpu/tensor.ts";
import { accuracy, sigmoidCrossEntropy, softmaxCrossEntropy } from "../src/ops/loss.ts";
import * as ref from "./reference/loss.ts";
import { assertClose, finiteDifference, getGpu, type Gpu, rng, uniform, upload } from "./util.ts";

/** Labels for T x B samples: binary {0, 1} or class indices < K, with a fraction of padding (-1). */
function labelsFor(n: number, options: { classes: number; padding: number; seed: number }) {
  const r = rng(options.seed);
  const out = new Float32Array(n);
  const k = Math.max(2, options.classes);
  for (let i = 0; i < n; i++) {
    out[i] = r() < options.padding ? -1 : Math.min(k - 1, Math.floor(r() * k));
  }
  return out;
}

interface Case {
  tasks: number;
  batch: number;
  classes: number;
  logits: Float32Array;
  labels: Float32Array;
  gradScale?: number;
}

/** Runs one loss on the GPU and reads perTask, loss and dLogits. */
async function gpuLoss(gpu: Gpu, c: Case) {
  const shape = c.classes === 1 ? [c.tasks, c.batch] : [c.tasks, c.batch, c.classes];
  const logits = upload(gpu, shape, c.logits);
  const labels = upload(gpu, [c.tasks, c.batch], c.labels);
  const out = {
    perTask: createTensor(gpu, [c.tasks]),
    loss: createTensor(gpu, [1]),
    dLogits: createTensor(gpu, shape),
    gradScale: c.gradScale,
  };
  const op = c.classes === 1 ? sigmoidCrossEntropy : softmaxCrossEntropy;
  run(gpu, op(gpu, logits, labels, out));
  const result = {
    perTask: await read(gpu, out.perTask),
    loss: await read(gpu, out.loss),
    dLogits: await read(gpu, out.dLogits),
  };
  for (const t of [logits, labels, out.perTask, out.loss, out.dLogits]) t.destroy();
  return result;
}

function refLoss(c: Case): ref.LossResult {
  return c.classes === 1
    ? ref.sigmoidCrossEntropy(c.logits, c.labels, c)
    : ref.softmaxCrossEntropy(c.logits, c.labels, c);
}

async function compare(gpu: Gpu, c: Case, label: string): Promise<void> {
  const got = await gpuLoss(gpu, c);
  const want = refLoss(c);
  assertClose(got.perTask, want.perTask, { rtol: 1e-5, atol: 1e-6, label: `${label} perTask` });
  assertClose(got.loss, [want.loss], { rtol: 1e-5, atol: 1e-6, label: `${label} loss` });
  // Gradients are O(1 / (B T)): compare relative to the largest of them.
  const scale = want.dLogits.reduce((m, g) => Math.max(m, Math.abs(g)), 1e-30);
  assertClose(got.dLogits, want.dLogits, { rtol: 1e-4, atol: 1e-6 * scale, label: `${label} dL` });
}

function randomCase(tasks: number, batch: number, options: { classes: number; seed: number }) {
  const { classes, seed } = options;
  return {
    tasks,
    batch,
    classes,
    logits: uniform(tasks * batch * classes, seed, -4, 4),
    labels: labelsFor(tasks * batch, { classes, padding: 0.2, seed: seed + 1 }),
  };
}

Deno.test("sigmoid cross-entropy matches the reference on odd, single and large shapes", async () => {
  const gpu = await getGpu();
  const shapes = [[1, 1], [1, 7], [2, 1], [3, 257], [4, 300], [130, 5], [3, 5000]] as const;
  for (const [i, [t, b]] of shapes.entries()) {
    await compare(gpu, randomCase(t, b, { classes: 1, seed: 10 + i }), `sigmoid ${t}x${b}`);
  }
});

Deno.test("softmax cross-entropy matches the reference for K = 2 and K = 10", async () => {
  const gpu = await getGpu();
  const shapes = [[1, 1, 2], [1, 1, 10], [2, 3, 2], [3, 257, 10], [5, 64, 2], [4, 700, 10]];
  for (const [i, [t, b, k]] of shapes.entries()) {
    const c = randomCase(t!, b!, { classes: k!, seed: 40 + i });
    await compare(gpu, c, `softmax ${t}x${b}x${k}`);
  }
});

Deno.test("gradScale scales dLogits but not the loss", async () => {
  const gpu = await getGpu();
  for (const classes of [1, 3]) {
    const c = { ...randomCase(2, 9, { classes, seed: 70 }), gradScale: 0.25 };
    await compare(gpu, c, `gradScale K=${classes}`);
    const unscaled = refLoss({ ...c, gradScale: 1 });
    const scaled = refLoss(c);
    assertClose(scaled.dLogits, unscaled.dLogits.map((g) => g * 0.25));
  }
});

Deno.test("reference dLogits equal finite differences of the reference loss", () => {
  for (const classes of [1, 2, 4]) {
    const c = randomCase(3, 4, { classes, seed: 80 + classes });
    c.labels.set([-1, -1, -1, -1], 4); // task 1 is all padding
    c.labels[0] = -1;
    const lossOf = (x: Float64Array) =>
      refLoss({ ...c, logits: x as unknown as Float32Array }).loss;
    const numeric = finiteDifference(lossOf, c.logits, { eps: 1e-4 });
    assertClose(refLoss(c).dLogits, numeric, { rtol: 1e-5, atol: 1e-8, label: `K=${classes}` });
    assert.ok(numeric.some((g) => Math.abs(g) > 1e-3), "the loss depends on the logits");
  }
});

Deno.test("padding is ignored and an all-padding task is left out of the mean", async () => {
  const gpu = await getGpu();
  for (const classes of [1, 5]) {
    const c = randomCase(3, 6, { classes, seed: 90 + classes });
    c.labels.fill(-1, 6, 12); // task 1: all padding
    c.labels[0] = -1;
    const got = await gpuLoss(gpu, c);
    // Changing logits under padding changes nothing.
    const moved = { ...c, logits: c.logits.slice() };
    for (let i = 6 * classes; i < 12 * classes; i++) moved.logits[i] = 100;
    for (let i = 0; i < classes; i++) moved.logits[i] = -50;
    const again = await gpuLoss(gpu, moved);
    assert.deepEqual(again.perTask, got.perTask);
    assert.deepEqual(again.loss, got.loss);
    assert.deepEqual(got.perTask[1], 0);
    assert.deepEqual(
      Array.from(got.dLogits.subarray(6 * classes, 12 * classes)),
      Array(6 * classes).fill(0),
    );
    assert.deepEqual(Array.from(got.dLogits.subarray(0, classes)), Array(classes).fill(0));
    // loss = mean of tasks 0 and 2 only.
    assertClose(got.loss, [(got.perTask[0]! + got.perTask[2]!) / 2], { rtol: 1e-6 });
    await compare(gpu, c, `padding K=${classes}`);
  }
});

Deno.test("all labels padding gives zero loss and zero gradients", async () => {
  const gpu = await getGpu();
  for (const classes of [1, 3]) {
    const c = randomCase(2, 5, { classes, seed: 100 });
    c.labels.fill(-1);
    const got = await gpuLoss(gpu, c);
    assert.deepEqual(Array.from(got.perTask), [0, 0]);
    assert.deepEqual(got.loss[0], 0);
    assert.ok(got.dLogits.every((g) => g === 0));
  }
});

Deno.test("large logits (+-1e4) give finite losses and gradients of the right sign", async () => {
  const gpu = await getGpu();
  // Binary: confident right (loss 0), confident wrong (loss 1e4), each sign.
  const binary = {
    tasks: 1,
    batch: 4,
    classes: 1,
    logits: new Float32Array([1e4, -1e4, 1e4, -1e4]),
    labels: new Float32Array([1, 0, 0, 1]),
  };
  const b = await gpuLoss(gpu, binary);
  assertClose(b.perTask, [(0 + 0 + 1e4 + 1e4) / 4], { rtol: 1e-6 });
  assert.deepEqual(Array.from(b.dLogits), [0, 0, 0.25, -0.25]);
  await compare(gpu, binary, "binary 1e4");
  // K-way: the label's logit far below (loss ~2e4) or far above (loss 0) the others.
  const kway = {
    tasks: 1,
    batch: 2,
    classes: 3,
    logits: new Float32Array([1e4, -1e4, 0, 1e4, -1e4, 0]),
    labels: new Float32Array([1, 0]),
  };
  const k = await gpuLoss(gpu, kway);
  assert.ok(Number.isFinite(k.loss[0]!) && Number.isFinite(k.perTask[0]!));
  assertClose(k.perTask, [(2e4 + 0) / 2], { rtol: 1e-6 });
  assert.ok(k.dLogits.every(Number.isFinite));
  assert.ok(k.dLogits[0]! > 0 && k.dLogits[1]! < 0, "wrong sample: push the winner down, label up");
  await compare(gpu, kway, "softmax 1e4");
});

Deno.test("losses are deterministic: the same bits twice", async () => {
  const gpu = await getGpu();
  for (const classes of [1, 10]) {
    const c = randomCase(7, 3000, { classes, seed: 120 });
    const first = await gpuLoss(gpu, c);
    const second = await gpuLoss(gpu, c);
    assert.deepEqual(bits(second.perTask), bits(first.perTask));
    assert.deepEqual(bits(second.loss), bits(first.loss));
    assert.deepEqual(bits(second.dLogits), bits(first.dLogits));
  }
});

/** The bit patterns of f32 values, for exact comparison. */
function bits(values: Float32Array): number[] {
  return Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));
}

/** Runs accuracy and reads its three outputs. */
async function gpuAccuracy(gpu: Gpu, c: Case) {
  const shape = c.classes === 1 ? [c.tasks, c.batch] : [c.tasks, c.batch, c.classes];
  const logits = upload(gpu, shape, c.logits);
  const labels = upload(gpu, [c.tasks, c.batch], c.labels);
  const [perTask, correct, valid] = [0, 1, 2].map(() => createTensor(gpu, [c.tasks])) as Tensor[];
  run(gpu, accuracy(gpu, logits, labels, { perTask: perTask!, correct, valid }));
  const result = {
    perTask: await read(gpu, perTask!),
    correct: await read(gpu, correct!),
    valid: await read(gpu, valid!),
  };
  for (const t of [logits, labels, perTask!, correct!, valid!]) t.destroy();
  return result;
}

Deno.test("accuracy counts like the reference, with ties and padding", async () => {
  const gpu = await getGpu();
  const cases: Case[] = [
    // Binary with z = 0 (predicts 0) and padding; the second task is all padding.
    {
      tasks: 2,
      batch: 4,
      classes: 1,
      logits: new Float32Array([0, 0, 2, -1, 5, 5, 5, 5]),
      labels: new Float32Array([0, 1, 1, -1, -1, -1, -1, -1]),
    },
    // K-way ties: the lowest index wins.
    {
      tasks: 1,
      batch: 4,
      classes: 3,
      logits: new Float32Array([1, 1, 0, 0, 2, 2, 3, 3, 3, 0, 0, 0]),
      labels: new Float32Array([0, 2, 0, 1]),
    },
    randomCase(3, 300, { classes: 1, seed: 130 }),
    randomCase(5, 513, { classes: 10, seed: 131 }),
    randomCase(1, 1, { classes: 2, seed: 132 }),
  ];
  for (const [i, c] of cases.entries()) {
    const got = await gpuAccuracy(gpu, c);
    const want = ref.accuracy(c.logits, c.labels, c);
    assert.deepEqual(Array.from(got.correct), Array.from(want.correct), `case ${i} correct`);
    assert.deepEqual(Array.from(got.valid), Array.from(want.valid), `case ${i} valid`);
    assertClose(got.perTask, want.perTask, { rtol: 1e-6, atol: 0, label: `case ${i} perTask` });
  }
  const binary = await gpuAccuracy(gpu, cases[0]!);
  assert.deepEqual(Array.from(binary.correct), [2, 0]);
  assert.deepEqual(Array.from(binary.valid), [3, 0]);
  const ties = await gpuAccuracy(gpu, cases[1]!);
  assert.deepEqual(Array.from(ties.correct), [2]);
});

Deno.test("accuracy without count outputs, and [T, B, 1] logits count as binary", async () => {
  const gpu = await getGpu();
  const logits = upload(gpu, [1, 3, 1], new Float32Array([1, -1, 1]));
  const labels = upload(gpu, [1, 3], new Float32Array([1, 1, 1]));
  const perTask = createTensor(gpu, [1]);
  run(gpu, accuracy(gpu, logits, labels, { perTask }));
  assertClose(await read(gpu, perTask), [2 / 3], { rtol: 1e-6 });
});

Deno.test("shape mismatches throw RangeError", async () => {
  const gpu = await getGpu();
  const logits = createTensor(gpu, [2, 3, 4]);
  const labels = createTensor(gpu, [2, 3]);
  const perTask = createTensor(gpu, [2]);
  const loss = createTensor(gpu, [1]);
  assert.throws(() => sigmoidCrossEntropy(gpu, logits, labels, { perTask, loss }), RangeError);
  assert.throws(
    () => softmaxCrossEntropy(gpu, logits, createTensor(gpu, [3, 2, 1]), { perTask, loss }),
    RangeError,
  );
  assert.throws(
    () => softmaxCrossEntropy(gpu, logits, labels, { perTask: createTensor(gpu, [3]), loss }),
    RangeError,
  );
  assert.throws(
    () => softmaxCrossEntropy(gpu, logits, labels, { perTask, loss, dLogits: perTask }),
    RangeError,
  );
  assert.throws(
    () => softmaxCrossEntropy(gpu, logits, createTensor(gpu, [2, 3], "u32"), { perTask, loss }),
    RangeError,
  );
  assert.throws(() => accuracy(gpu, createTensor(gpu, [6]), labels, { perTask }), RangeError);
});
