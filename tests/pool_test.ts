import { deepEqual, equal, throws } from "node:assert/strict";
import { run } from "../src/gpu/kernel.ts";
import { createTensor, numel, read, readU32, Tensor } from "../src/gpu/tensor.ts";
import { maxPool2d, maxPool2dBackward, poolOutputSize } from "../src/ops/pool.ts";
import * as ref from "./reference/pool.ts";
import { assertClose, finiteDifference, getGpu, type Gpu, rng, uniform, upload } from "./util.ts";

/**
 * Shapes [T, B, C, H, W]: the smallest, odd H and W (alone and together), T = 1 and B = 1, and
 * sizes that are not multiples of the 256-wide workgroup, in inputs or in outputs.
 */
const SHAPES: number[][] = [
  [1, 1, 1, 2, 2],
  [1, 1, 1, 3, 3],
  [2, 3, 4, 5, 7],
  [1, 2, 3, 8, 9],
  [3, 1, 2, 7, 6],
  [2, 3, 5, 9, 11],
  [2, 5, 3, 21, 20],
];

/** Values as f32 bits compare them: -0 differs from 0, NaN equals NaN. */
function f32s(values: ArrayLike<number>): number[] {
  return Array.from(Float32Array.from(values));
}

/** Runs maxPool2d on `data` of `shape`; returns y, indices and the tensors to destroy. */
async function pool(
  gpu: Gpu,
  shape: number[],
  data: Float32Array,
): Promise<{ y: Float32Array; indices: Uint32Array; tensors: Tensor[] }> {
  const pooled = poolOutputSize(shape);
  const x = upload(gpu, shape, data);
  const y = createTensor(gpu, pooled);
  const indices = createTensor(gpu, pooled, "u32");
  run(gpu, maxPool2d(gpu, x, y, indices));
  return { y: await read(gpu, y), indices: await readU32(gpu, indices), tensors: [x, y, indices] };
}

/** Checks the forward against the reference, exactly (pooling only copies values). */
async function checkForward(gpu: Gpu, shape: number[], data: Float32Array, label: string) {
  const { y, indices, tensors } = await pool(gpu, shape, data);
  const expected = ref.maxPool2d(data, shape);
  deepEqual(Array.from(y), f32s(expected.y), `${label} [${shape}] y`);
  deepEqual(Array.from(indices), Array.from(expected.indices), `${label} [${shape}] indices`);
  for (const t of tensors) t.destroy();
}

Deno.test("poolOutputSize halves H and W, dropping an odd last row or column", () => {
  deepEqual(poolOutputSize([2, 3, 4, 5, 7]), [2, 3, 4, 2, 3]);
  deepEqual(poolOutputSize([1, 1, 1, 2, 2]), [1, 1, 1, 1, 1]);
  deepEqual(poolOutputSize([0, 8, 64, 84, 84]), [0, 8, 64, 42, 42]);
});

/**
 * Hand-made windows (three 2x4 planes, two windows each, in row-major window order) with the
 * values and positions PyTorch's MaxPool2d(2) gives: [1, 2, 2, 0] -> 2 at 1;
 * [4, 4, 4, 4] -> 4 at 0; [-0, 0, 0, -0] -> -0 at 0; [-inf, -inf, -1, -inf] -> -1 at 2;
 * [-inf x 4] -> -inf at 0; [5, 5, 5, 6] -> 6 at 3.
 */
const HAND = {
  shape: [1, 3, 1, 2, 4],
  x: [
    [1, 2, 4, 4, 2, 0, 4, 4],
    [-0, 0, -Infinity, -Infinity, 0, -0, -1, -Infinity],
    [-Infinity, -Infinity, 5, 5, -Infinity, -Infinity, 5, 6],
  ].flat(),
  y: [2, 4, -0, -1, -Infinity, 6],
  indices: [1, 0, 0, 2, 0, 3],
};

/** Windows with NaN: [1, NaN, 2, NaN] -> NaN at 3; [NaN, 5, 6, 7] -> NaN at 0; no NaN. */
const NAN = {
  shape: [1, 1, 3, 2, 2],
  x: [1, NaN, 2, NaN, NaN, 5, 6, 7, 3, 2, 1, 0],
  y: [NaN, NaN, 3],
  indices: [3, 0, 0],
};

Deno.test("reference maxPool2d picks the first of ties and the last NaN, as PyTorch", () => {
  for (const c of [HAND, NAN]) {
    const { y, indices } = ref.maxPool2d(c.x, c.shape);
    deepEqual(Array.from(y), c.y);
    deepEqual(Array.from(indices), c.indices);
  }
});

Deno.test("maxPool2d matches the reference on random inputs, odd sizes and T = B = 1", async () => {
  const gpu = await getGpu();
  for (const [i, shape] of SHAPES.entries()) {
    await checkForward(gpu, shape, uniform(numel(shape), 10 + i, -2, 2), "random");
  }
});

Deno.test("maxPool2d keeps large values and infinities exactly", async () => {
  const gpu = await getGpu();
  for (const [i, shape] of SHAPES.entries()) {
    const data = uniform(numel(shape), 20 + i, -3e38, 3e38);
    const r = rng(30 + i);
    for (let j = 0; j < data.length; j++) {
      const u = r();
      if (u < 0.05) data[j] = Infinity;
      else if (u < 0.1) data[j] = -Infinity;
    }
    await checkForward(gpu, shape, data, "large");
  }
});

Deno.test("maxPool2d breaks ties by the first element in window order", async () => {
  const gpu = await getGpu();
  for (const [i, shape] of SHAPES.entries()) {
    // Values -1, -0, 0 and 1: most windows hold ties, some of zeros of both signs.
    const data = uniform(numel(shape), 40 + i).map(Math.round);
    await checkForward(gpu, shape, data, "ties");
  }
});

Deno.test("maxPool2d matches the hand-made windows, -0 and NaN included", async () => {
  const gpu = await getGpu();
  for (const c of [HAND, NAN]) {
    const { y, indices, tensors } = await pool(gpu, c.shape, Float32Array.from(c.x));
    deepEqual(Array.from(y), c.y);
    deepEqual(Array.from(indices), c.indices);
    for (const t of tensors) t.destroy();
  }
});

Deno.test("maxPool2dBackward scatters dy to the argmax, overwriting or accumulating", async () => {
  const gpu = await getGpu();
  for (const [i, shape] of SHAPES.entries()) {
    const pooled = poolOutputSize(shape);
    // Ties included, so the argmax decides which of equal inputs gets the gradient.
    const xData = uniform(numel(shape), 50 + i).map((u) => Math.round(3 * u) / 3);
    const dyData = uniform(numel(pooled), 60 + i, -5, 5);
    const initial = uniform(numel(shape), 70 + i, -5, 5);
    // Inputs that win nothing keep even the sign of a zero when accumulating (llvmpipe also
    // gives -0 + 0 = -0, so only a stricter GPU would catch a kernel that adds 0 to them).
    for (let j = 0; j < initial.length; j += 3) initial[j] = -0;
    const { indices: argmax, tensors } = await pool(gpu, shape, xData);
    deepEqual(Array.from(argmax), Array.from(ref.maxPool2d(xData, shape).indices));
    const [x, y, idx] = tensors as [Tensor, Tensor, Tensor];
    const dy = upload(gpu, pooled, dyData);
    for (const accumulate of [false, true]) {
      const dx = upload(gpu, shape, initial);
      run(gpu, maxPool2dBackward(gpu, dy, idx, dx, { accumulate }));
      const got = await read(gpu, dx);
      const expected = ref.maxPool2dBackward(
        dyData,
        argmax,
        shape,
        accumulate ? initial : undefined,
      );
      deepEqual(Array.from(got), f32s(expected), `[${shape}] accumulate=${accumulate}`);
      dx.destroy();
    }
    for (const t of [x, y, idx, dy]) t.destroy();
  }
});

Deno.test("maxPool2dBackward matches finite differences of the reference forward", async () => {
  const gpu = await getGpu();
  for (const shape of [[2, 2, 3, 5, 5], [1, 1, 2, 4, 6], [1, 3, 1, 7, 4]]) {
    const n = numel(shape);
    const pooled = poolOutputSize(shape);
    // Distinct values 0.01 apart in a shuffled order: no two of a window come within the step.
    const r = rng(n);
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const xData = Float32Array.from(order, (k) => (k - n / 2) * 0.01);
    const g = uniform(numel(pooled), n + 1, -2, 2);
    const loss = (xs: Float64Array) =>
      ref.maxPool2d(xs, shape).y.reduce((sum, v, o) => sum + v * g[o]!, 0);
    const expected = finiteDifference(loss, xData, { eps: 1e-3 });
    const { tensors } = await pool(gpu, shape, xData);
    const [x, y, idx] = tensors as [Tensor, Tensor, Tensor];
    const dy = upload(gpu, pooled, g);
    const dx = createTensor(gpu, shape);
    run(gpu, maxPool2dBackward(gpu, dy, idx, dx));
    assertClose(await read(gpu, dx), expected, { rtol: 1e-5, atol: 1e-6, label: `[${shape}]` });
    for (const t of [x, y, idx, dy, dx]) t.destroy();
  }
});

Deno.test("max pooling rejects bad shapes, dtypes and shared buffers", async () => {
  const gpu = await getGpu();
  const x = createTensor(gpu, [1, 2, 3, 5, 7]);
  const y = createTensor(gpu, [1, 2, 3, 2, 3]);
  const indices = createTensor(gpu, [1, 2, 3, 2, 3], "u32");
  const dx = createTensor(gpu, [1, 2, 3, 6, 6]);
  const rejects = (f: () => unknown, message: RegExp) => throws(f, { name: "RangeError", message });
  rejects(
    () => maxPool2d(gpu, x.reshape([2, 3, 5, 7]), y, indices),
    /expects an input of shape \[T, B, C, H, W\], got \[2, 3, 5, 7\]/,
  );
  rejects(() => maxPool2d(gpu, x.reshape([1, 2, 3, 35, 1]), y, indices), /at least 2/);
  rejects(
    () => maxPool2d(gpu, x, y.reshape([1, 2, 3, 3, 2]), indices),
    /maxPool2d of x \[1, 2, 3, 5, 7\] expects y of shape \[1, 2, 3, 2, 3\], got \[1, 2, 3, 3, 2\]/,
  );
  rejects(() => maxPool2d(gpu, x, y, y), /u32 indices, got f32, f32 and f32/);
  rejects(() => maxPool2d(gpu, x, indices, indices), /u32 indices, got f32, u32 and u32/);
  rejects(
    () => maxPool2d(gpu, x, new Tensor(x.buffer, [1, 2, 3, 2, 3]), indices),
    /three different buffers/,
  );
  rejects(
    () => maxPool2dBackward(gpu, y, indices, dx),
    /maxPool2dBackward of dx \[1, 2, 3, 6, 6\] expects dy of shape \[1, 2, 3, 3, 3\]/,
  );
  rejects(
    () => maxPool2dBackward(gpu, y, y, x, { accumulate: true }),
    /f32 dx and dy and u32 indices/,
  );
  rejects(
    () => maxPool2dBackward(gpu, new Tensor(x.buffer, [1, 2, 3, 2, 3]), indices, x),
    /cannot write dx into the buffer of dy or indices/,
  );
  // No tasks: nothing to dispatch.
  const empty = createTensor(gpu, [0, 2, 3, 4, 4]);
  const emptyY = createTensor(gpu, [0, 2, 3, 2, 2]);
  const emptyIdx = createTensor(gpu, [0, 2, 3, 2, 2], "u32");
  equal(maxPool2d(gpu, empty, emptyY, emptyIdx).length, 0);
  equal(maxPool2dBackward(gpu, emptyY, emptyIdx, empty).length, 0);
  for (const t of [x, y, indices, dx, empty, emptyY, emptyIdx]) t.destroy();
});
