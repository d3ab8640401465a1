import { deepEqual, equal, throws } from "node:assert/strict";
import type { Dispatch } from "../src/gpu/kernel.ts";
import { createTensor, numel } from "../src/gpu/tensor.ts";
import { reduceSum, sumOfSquares } from "../src/ops/reduce.ts";
import * as ref from "./reference/reduce.ts";
import { assertClose, getGpu, type Gpu, runAndRead, uniform, upload } from "./util.ts";

/** Which kernel a prepared reduceSum runs ("reduce_rows" or "reduce_tree"). */
function entryOf(dispatches: Dispatch[]): string {
  return dispatches[0]!.pipeline.label.split(":")[1]!;
}

/** Checks reduceSum on random data (accumulating onto random values if asked) vs the reference. */
async function check(
  gpu: Gpu,
  shape: number[],
  options: { axes: number[]; scale?: number; accumulate?: boolean },
): Promise<string> {
  const xData = uniform(numel(shape), numel(shape) + shape.length, -2, 2);
  const expected = ref.reduceSum(xData, shape, options);
  const before = uniform(expected.length, 5);
  const x = upload(gpu, shape, xData);
  const out = upload(gpu, [expected.length], before);
  const dispatches = reduceSum(gpu, x, out, options);
  const got = await runAndRead(gpu, dispatches, out);
  if (options.accumulate) expected.forEach((v, i) => expected[i] = v + before[i]!);
  assertClose(got, expected, {
    rtol: 1e-5,
    atol: 1e-5,
    label: `reduceSum [${shape}] over [${options.axes}]`,
  });
  x.destroy();
  out.destroy();
  return entryOf(dispatches);
}

Deno.test("reduceSum over first, middle, last, several and all axes", async () => {
  const gpu = await getGpu();
  const cases: [number[], number[][]][] = [
    [[3, 5, 7], [[], [0], [1], [2], [0, 1], [1, 2], [0, 2], [0, 1, 2], [2, 0]]],
    [[2, 3, 4, 5, 6], [[0], [2], [4], [1, 3], [0, 2, 4], [1, 2, 3], [1, 3, 4], [0, 1, 2, 3, 4]]],
    [[1, 4, 1, 3, 1], [[0], [1], [1, 3], [0, 2, 4], [0, 1, 2, 3, 4]]],
    [[2, 1, 3, 1, 2, 3], [[0, 2, 4], [1, 3, 5], [0, 5]]],
    // Three separate reduced runs (and three kept ones) whose sizes do not divide the tree width.
    [[3, 2, 5, 2, 7, 2], [[0, 2, 4], [1, 3, 5]]],
  ];
  for (const [shape, axesList] of cases) {
    for (const axes of axesList) {
      await check(gpu, shape, { axes });
      await check(gpu, shape, { axes, scale: -0.25, accumulate: true });
    }
  }
});

Deno.test("reduceSum serves bias gradients and means with both kernels", async () => {
  const gpu = await getGpu();
  // Linear layer bias gradient: dy [T, R, N] over rows, many outputs, short sums.
  equal(await check(gpu, [3, 128, 100], { axes: [1] }), "reduce_rows");
  equal(await check(gpu, [1, 2, 200], { axes: [1] }), "reduce_tree");
  equal(await check(gpu, [1, 3, 300], { axes: [1], accumulate: true }), "reduce_rows");
  // Conv bias gradient: dy [T, B, O, H, W] over [1, 3, 4], few outputs, long sums.
  equal(await check(gpu, [2, 16, 5, 9, 9], { axes: [1, 3, 4] }), "reduce_tree");
  equal(await check(gpu, [1, 3, 7, 5, 5], { axes: [1, 3, 4], accumulate: true }), "reduce_tree");
  // Mean of a per-example loss [T, B] over the batch, and of everything.
  equal(await check(gpu, [4, 37], { axes: [1], scale: 1 / 37 }), "reduce_tree");
  equal(await check(gpu, [300, 1000], { axes: [0, 1], scale: 1 / 3e5 }), "reduce_tree");
  // Rows that are not a multiple of the workgroup, outputs that span several workgroups.
  equal(await check(gpu, [7, 33, 131], { axes: [1] }), "reduce_rows");
  equal(await check(gpu, [5, 1000, 3], { axes: [1] }), "reduce_tree");
  // Many outputs of long sums; a conv with small images, whose innermost run is shorter than the
  // tree's stride.
  equal(await check(gpu, [300, 4100], { axes: [1] }), "reduce_tree");
  equal(await check(gpu, [2, 50, 3, 3, 3], { axes: [1, 3, 4] }), "reduce_tree");
});

Deno.test("reduceSum with more than 65535 workgroups uses the 2D grid", async () => {
  const gpu = await getGpu();
  // No axes: a scaled copy, one output per invocation, 65537 workgroups of 256.
  const shape = [4, 65537 * 64];
  const x = createTensor(gpu, shape);
  const out = createTensor(gpu, shape);
  const dispatches = reduceSum(gpu, x, out, { axes: [] });
  equal(entryOf(dispatches), "reduce_rows");
  equal(dispatches[0]!.groups[1] > 1, true, "the dispatch spans several grid rows");
  x.destroy();
  out.destroy();
  equal(await check(gpu, shape, { axes: [], scale: 3 }), "reduce_rows");
});

Deno.test("reduceSum gives the same bits run to run", async () => {
  const gpu = await getGpu();
  const shape = [2, 64, 6, 10, 10];
  const x = upload(gpu, shape, uniform(numel(shape), 17, -100, 100));
  const out = createTensor(gpu, [2, 6]);
  const dispatches = reduceSum(gpu, x, out, { axes: [1, 3, 4] });
  const first = new Uint32Array((await runAndRead(gpu, dispatches, out)).buffer);
  const second = new Uint32Array((await runAndRead(gpu, dispatches, out)).buffer);
  deepEqual(second, first);
  x.destroy();
  out.destroy();
});

Deno.test("sumOfSquares matches a float64 sum and repeats bit for bit", async () => {
  const gpu = await getGpu();
  for (const n of [0, 1, 257, 4099, 1_000_003]) {
    const data = uniform(n, n + 1, -3, 3);
    // An empty upload would be a zero-length write, which Deno's WebGPU does not survive.
    const x = n === 0 ? createTensor(gpu, [0]) : upload(gpu, [n], data);
    const out = createTensor(gpu, [1]);
    const { dispatches, scratch } = sumOfSquares(gpu, x, out);
    const first = await runAndRead(gpu, dispatches, out);
    assertClose(first, [ref.sumOfSquares(data)], { rtol: 1e-5, atol: 0, label: `n=${n}` });
    const second = await runAndRead(gpu, dispatches, out);
    deepEqual(new Uint32Array(second.buffer), new Uint32Array(first.buffer), `n=${n} repeats`);
    for (const t of [x, out, scratch]) t.destroy();
  }
});

Deno.test("reductions reject bad axes and output sizes", async () => {
  const gpu = await getGpu();
  const x = createTensor(gpu, [2, 3, 4]);
  const out = createTensor(gpu, [8]);
  const rejects = (f: () => unknown, message: RegExp) => throws(f, { name: "RangeError", message });
  rejects(() => reduceSum(gpu, x, out, { axes: [3] }), /axes must be integers in \[0, 3\)/);
  rejects(() => reduceSum(gpu, x, out, { axes: [1, 1] }), /must not repeat/);
  rejects(() => reduceSum(gpu, x, out, { axes: [2] }), /expects out to have 6 elements/);
  rejects(() => reduceSum(gpu, x, x.reshape([24]), { axes: [] }), /buffer of its input/);
  rejects(() => sumOfSquares(gpu, x, out), /1 element/);
  for (const t of [x, out]) t.destroy();
});
