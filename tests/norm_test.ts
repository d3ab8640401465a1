import { deepEqual, throws } from "node:assert/strict";
import { run } from "../src/gpu/kernel.ts";
import { createTensor, numel, readMany, type Tensor } from "../src/gpu/tensor.ts";
import { batchNorm, batchNormBackward, type BatchNormBackwardOptions } from "../src/ops/norm.ts";
import * as ref from "./reference/norm.ts";
import { assertClose, finiteDifference, getGpu, type Gpu, uniform, upload } from "./util.ts";

type Shape = ref.NormShape;

/** Random inputs of a batch norm of x `shape`: x in [lo, hi), gamma in [-2, 2), beta in [-1, 1). */
function inputs(shape: Shape, seed: number, lo = -2, hi = 2) {
  const pairs = shape[0] * shape[2];
  return {
    x: uniform(numel(shape), seed, lo, hi),
    gamma: uniform(pairs, seed + 1, -2, 2),
    beta: uniform(pairs, seed + 2, -1, 1),
  };
}

/** The forward on the GPU: y, mean and invstd as read back, and the tensors (for a backward). */
async function forward(
  gpu: Gpu,
  shape: Shape,
  data: { x: Float32Array; gamma: Float32Array; beta: Float32Array },
  eps?: number,
) {
  const pairs = [shape[0], shape[2]];
  const t = {
    x: upload(gpu, [...shape], data.x),
    gamma: upload(gpu, pairs, data.gamma),
    beta: upload(gpu, pairs, data.beta),
    y: createTensor(gpu, shape),
    mean: createTensor(gpu, pairs),
    invstd: createTensor(gpu, pairs),
  };
  run(gpu, batchNorm(gpu, t.x, t.y, { ...t, eps }));
  const [y, mean, invstd] = await readMany(gpu, [t.y, t.mean, t.invstd]);
  return { y: y!, mean: mean!, invstd: invstd!, t };
}

function destroy(tensors: Record<string, Tensor | undefined>): void {
  for (const t of Object.values(tensors)) t?.destroy();
}

Deno.test("batchNorm matches the reference", async () => {
  const gpu = await getGpu();
  // Planes shorter and longer than the workgroup (the walk's carry), exactly as long, and of one
  // value; counts N = B * H * W that are not multiples of 64; T = 1; a long N (B = 80, 28 x 28).
  const cases: [Shape, number?][] = [
    [[2, 3, 4, 5, 7]],
    [[1, 2, 3, 9, 9], 1e-3],
    [[3, 5, 2, 1, 1]],
    [[2, 1, 2, 8, 8]],
    [[1, 7, 2, 3, 3]],
    [[1, 80, 2, 28, 28]],
  ];
  for (const [shape, eps] of cases) {
    const data = inputs(shape, numel(shape));
    const got = await forward(gpu, shape, data, eps);
    const want = ref.batchNorm(data.x, shape, { ...data, eps });
    const label = `batchNorm [${shape}]`;
    assertClose(got.y, want.y, { rtol: 1e-4, atol: 1e-5, label: `${label} y` });
    assertClose(got.mean, want.mean, { rtol: 1e-5, atol: 1e-6, label: `${label} mean` });
    assertClose(got.invstd, want.invstd, { rtol: 1e-5, atol: 0, label: `${label} invstd` });
    destroy(got.t);
  }
});

Deno.test("batchNorm of constant values (variance 0; B = H = W = 1) gives beta", async () => {
  const gpu = await getGpu();
  for (const shape of [[1, 1, 3, 1, 1], [2, 1, 4, 1, 1], [2, 4, 3, 3, 3]] as Shape[]) {
    const [tasks, batch, channels, h, w] = shape;
    // The pair (t, c) of value i of x.
    const pair = (i: number) =>
      Math.floor(i / (batch * channels * h * w)) * channels + Math.floor(i / (h * w)) % channels;
    const data = inputs(shape, 7);
    const values = uniform(tasks * channels, 8, -1000, 1000);
    data.x = data.x.map((_, i) => values[pair(i)]!);
    const got = await forward(gpu, shape, data);
    deepEqual(got.y, data.x.map((_, i) => data.beta[pair(i)]!), `batchNorm [${shape}] y`);
    deepEqual(got.mean, values, `batchNorm [${shape}] mean`);
    assertClose(got.invstd, got.invstd.map(() => 1 / Math.sqrt(1e-5)), { rtol: 1e-6 });
    destroy(got.t);
  }
});

/** The spacing of f32 values around v. */
function ulp(v: number): number {
  return 2 ** (Math.floor(Math.log2(Math.abs(v))) - 23);
}

Deno.test("batchNorm is stable for large values and a large mean offset", async () => {
  const gpu = await getGpu();
  const small: Shape = [2, 8, 3, 10, 10];
  // Small spreads around large means (E[x^2] - E[x]^2 would lose the variance to rounding, and
  // a plain sum of x the mean: off by 0.4 for N = 62,720 around 1e5), and values up to 3e4. The
  // mean is stored as f32, which bounds y's accuracy (half an ulp of 1e5 is 4e-3, over a standard
  // deviation of 0.29); the mean must be within an ulp of the exact one, plus 1e-6 of the spread.
  const cases: [Shape, number, number, number][] = [
    [small, 999, 1001, 3e-4],
    [small, -3e4, 3e4, 1e-5],
    [small, 5e4, 5.002e4, 2e-3],
    [[1, 80, 2, 28, 28], 1e5, 1e5 + 1, 2e-2],
  ];
  for (const [shape, lo, hi, atol] of cases) {
    const data = inputs(shape, 11, lo, hi);
    const got = await forward(gpu, shape, data);
    const want = ref.batchNorm(data.x, shape, data);
    const label = `batchNorm [${shape}] of x in [${lo}, ${hi})`;
    assertClose(got.y, want.y, { rtol: 1e-4, atol, label: `${label} y` });
    const meanAtol = ulp(Math.max(-lo, hi)) + 1e-6 * (hi - lo);
    assertClose(got.mean, want.mean, { rtol: 0, atol: meanAtol, label: `${label} mean` });
    assertClose(got.invstd, want.invstd, { rtol: 1e-4, atol: 0, label: `${label} invstd` });
    destroy(got.t);
  }
});

/** The backward on the GPU after the GPU forward, with dy = r, onto `before` where accumulating. */
async function backward(
  gpu: Gpu,
  shape: Shape,
  data: { x: Float32Array; gamma: Float32Array; beta: Float32Array; r: Float32Array },
  options: {
    outputs?: ("dx" | "dGamma" | "dBeta")[];
    accumulate?: BatchNormBackwardOptions["accumulate"];
    before?: { dx: Float32Array; dGamma: Float32Array; dBeta: Float32Array };
  } = {},
) {
  const { outputs = ["dx", "dGamma", "dBeta"], accumulate, before } = options;
  const { t } = await forward(gpu, shape, data);
  const pairs = [shape[0], shape[2]];
  const make = (name: "dx" | "dGamma" | "dBeta", s: number[]) =>
    outputs.includes(name)
      ? before ? upload(gpu, s, before[name]) : createTensor(gpu, s)
      : undefined;
  const grads = {
    dx: make("dx", [...shape]),
    dGamma: make("dGamma", pairs),
    dBeta: make("dBeta", pairs),
  };
  const dy = upload(gpu, [...shape], data.r);
  run(gpu, batchNormBackward(gpu, dy, { ...t, ...grads, accumulate }));
  const present = outputs.map((name) => grads[name]!);
  const values = await readMany(gpu, present);
  destroy({ ...t, ...grads, dy });
  return Object.fromEntries(outputs.map((name, i) => [name, values[i]!]));
}

Deno.test("batchNormBackward matches finite differences of the reference forward", async () => {
  const gpu = await getGpu();
  // Variance 0 (B = H = W = 1), two values per pair, and N = 18 over two tasks.
  for (const shape of [[1, 1, 2, 1, 1], [1, 2, 3, 1, 1], [2, 3, 2, 2, 3]] as Shape[]) {
    const data = { ...inputs(shape, 3 * numel(shape)), r: uniform(numel(shape), 5, -1, 1) };
    const got = await backward(gpu, shape, data);
    // loss = sum(y * r), as a function of each input with the others held.
    const loss = (x: ArrayLike<number>, gamma: ArrayLike<number>, beta: ArrayLike<number>) =>
      ref.batchNorm(x, shape, { gamma, beta }).y.reduce((s, v, i) => s + v * data.r[i]!, 0);
    const fd = { eps: 1e-5 };
    const want = {
      dx: finiteDifference((x) => loss(x, data.gamma, data.beta), data.x, fd),
      dGamma: finiteDifference((g) => loss(data.x, g, data.beta), data.gamma, fd),
      dBeta: finiteDifference((b) => loss(data.x, data.gamma, b), data.beta, fd),
    };
    for (const name of ["dx", "dGamma", "dBeta"] as const) {
      assertClose(got[name]!, want[name], { rtol: 1e-3, atol: 1e-4, label: `[${shape}] ${name}` });
      // The reference backward agrees too (it is what the larger cases below compare against).
      const exact = ref.batchNormBackward(data.r, shape, data)[name];
      assertClose(exact, want[name], { rtol: 1e-5, atol: 1e-6, label: `reference ${name}` });
    }
  }
});

Deno.test("batchNormBackward matches the reference, for any outputs and accumulate", async () => {
  const gpu = await getGpu();
  const cases: [Shape, Parameters<typeof backward>[3]][] = [
    [[2, 3, 4, 5, 7], {}],
    [[1, 80, 1, 28, 28], {}],
    [[3, 5, 2, 1, 1], { accumulate: true }],
    [[2, 3, 4, 5, 7], { accumulate: { dx: true, dBeta: true } }],
    [[1, 7, 3, 3, 3], { outputs: ["dx"], accumulate: true }],
    [[1, 7, 3, 3, 3], { outputs: ["dGamma", "dBeta"] }],
    [[2, 2, 3, 9, 9], { outputs: ["dBeta"], accumulate: { dBeta: true } }],
    [[2, 2, 3, 9, 9], { outputs: ["dx", "dGamma"], accumulate: { dGamma: true } }],
  ];
  for (const [shape, options] of cases) {
    const n = numel(shape);
    const pairs = shape[0] * shape[2];
    const data = { ...inputs(shape, n + 1), r: uniform(n, n + 3, -1, 1) };
    const before = { dx: uniform(n, 8), dGamma: uniform(pairs, 9), dBeta: uniform(pairs, 10) };
    const got = await backward(gpu, shape, data, { ...options, before });
    const want = ref.batchNormBackward(data.r, shape, data);
    const accumulate = options?.accumulate;
    for (const name of options?.outputs ?? ["dx", "dGamma", "dBeta"] as const) {
      const added = typeof accumulate === "object" ? accumulate[name] : accumulate;
      const expected = want[name].map((v, i) => added ? v + before[name][i]! : v);
      const label = `[${shape}] ${name} ${JSON.stringify(options)}`;
      assertClose(got[name]!, expected, { rtol: 1e-3, atol: 1e-4, label });
    }
  }
});

Deno.test("batchNorm and its backward give the same bits run to run", async () => {
  const gpu = await getGpu();
  const shape: Shape = [2, 6, 3, 7, 7];
  const data = { ...inputs(shape, 21, -50, 50), r: uniform(numel(shape), 22) };
  const first = await backward(gpu, shape, data);
  const second = await backward(gpu, shape, data);
  for (const name of ["dx", "dGamma", "dBeta"]) {
    deepEqual(new Uint32Array(second[name]!.buffer), new Uint32Array(first[name]!.buffer), name);
  }
});

Deno.test("batchNorm and batchNormBackward reject bad shapes, dtypes and aliasing", async () => {
  const gpu = await getGpu();
  const x = createTensor(gpu, [2, 4, 3, 5, 5]);
  const y = createTensor(gpu, [2, 4, 3, 5, 5]);
  const pair = () => createTensor(gpu, [2, 3]);
  const [gamma, beta, mean, invstd, dGamma] = [pair(), pair(), pair(), pair(), pair()];
  const stats = { gamma, beta, mean, invstd };
  const rejects = (f: () => unknown, message: RegExp) => throws(f, { name: "RangeError", message });
  rejects(
    () => batchNorm(gpu, x.reshape([8, 3, 5, 5]), y, stats),
    /batchNorm expects x to be an f32 tensor \[T, B, C, H, W\], got f32 \[8, 3, 5, 5\]/,
  );
  rejects(
    () => batchNorm(gpu, x, y, { ...stats, gamma: gamma.reshape([6]) }),
    /batchNorm expects gamma to be f32 \[2, 3\] for x \[2, 4, 3, 5, 5\]/,
  );
  rejects(() => batchNorm(gpu, x, y.reshape([2, 4, 3, 25, 1]), stats), /expects y to be f32/);
  const u32 = createTensor(gpu, [2, 3], "u32");
  rejects(() => batchNorm(gpu, x, y, { ...stats, mean: u32 }), /expects mean to be f32 \[2, 3\]/);
  rejects(
    () => batchNorm(gpu, createTensor(gpu, [2, 0, 3, 5, 5]), y, stats),
    /at least one value per task and channel/,
  );
  rejects(() => batchNorm(gpu, x, y, { ...stats, eps: -1 }), /eps to be finite and at least 0/);
  rejects(() => batchNorm(gpu, x, x, stats), /cannot write y into the buffer of one of its inputs/);
  rejects(() => batchNorm(gpu, x, y, { ...stats, invstd: mean }), /mean and invstd .* same/);
  rejects(
    () => batchNormBackward(gpu, y, { x, gamma, mean, invstd, dx: x.reshape([2, 4, 3, 25]) }),
    /batchNormBackward expects dx to be f32 \[2, 4, 3, 5, 5\]/,
  );
  rejects(
    () => batchNormBackward(gpu, y.reshape([2, 4, 75]), { x, gamma, mean, invstd, dGamma }),
    /expects dy to be f32/,
  );
  rejects(
    () => batchNormBackward(gpu, y, { x, gamma, mean, invstd, dGamma, dBeta: dGamma }),
    /cannot write dGamma and dBeta into the same memory/,
  );
  for (const t of [x, y, gamma, beta, mean, invstd, dGamma, u32]) t.destroy();
});
