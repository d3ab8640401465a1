/**
 * Squared distances (shaders/distance.wgsl) against the CPU reference: random sizes, T = 1, sizes
 * that are not multiples of the 256-wide workgroup, large values; the backward against finite
 * differences, with and without accumulation; and the tape's ProtoNet head (prototypes as a mean,
 * logits -d) whose support rows get gradients through two ops.
 */
import { deepEqual, throws } from "node:assert/strict";
import { run } from "../src/gpu/kernel.ts";
import { createTensor, read } from "../src/gpu/tensor.ts";
import { squaredDistance, squaredDistanceBackward } from "../src/ops/distance.ts";
import { Tape } from "../src/tape.ts";
import * as ref from "./reference/distance.ts";
import { assertClose, finiteDifference, getGpu, runAndRead, uniform, upload } from "./util.ts";

/** [T, Q, K, F]: the smallest, T = 1, and outputs or gradients past one 256-wide workgroup. */
const SIZES: [number, number, number, number][] = [
  [1, 1, 1, 1],
  [1, 5, 3, 7],
  [3, 17, 5, 33],
  [2, 75, 5, 64],
  [1, 300, 1, 3],
  [4, 9, 20, 257],
];

const sizesOf = ([tasks, queries, centres, features]: [number, number, number, number]) => ({
  tasks,
  queries,
  centres,
  features,
});

Deno.test("squaredDistance matches the reference, scaled and unscaled", async () => {
  const gpu = await getGpu();
  for (const [i, size] of SIZES.entries()) {
    const [T, Q, K, F] = size;
    const xData = uniform(T * Q * F, 10 + i);
    const cData = uniform(T * K * F, 20 + i);
    const x = upload(gpu, [T, Q, F], xData);
    const c = upload(gpu, [T, K, F], cData);
    const out = createTensor(gpu, [T, Q, K]);
    for (const scale of [1, -1, 0.25]) {
      const got = await runAndRead(gpu, squaredDistance(gpu, x, c, out, { scale }), out);
      const expected = ref.squaredDistance(xData, cData, { ...sizesOf(size), scale });
      assertClose(got, expected, { rtol: 1e-5, atol: 1e-5, label: `[${size}] scale ${scale}` });
    }
    for (const t of [x, c, out]) t.destroy();
  }
});

Deno.test("squaredDistance keeps its precision on large values, 0 for equal rows", async () => {
  const gpu = await getGpu();
  const [T, Q, K, F] = [2, 7, 3, 50];
  const xData = uniform(T * Q * F, 3, -1000, 1000);
  const cData = uniform(T * K * F, 4, -1000, 1000);
  // Centre 0 of each task equals query 0: distance exactly 0 (differences are squared, not
  // |x|^2 - 2 x.c + |c|^2).
  for (let t = 0; t < T; t++) {
    cData.set(xData.subarray(t * Q * F, t * Q * F + F), t * K * F);
  }
  const x = upload(gpu, [T, Q, F], xData);
  const c = upload(gpu, [T, K, F], cData);
  const out = createTensor(gpu, [T, Q, K]);
  const got = await runAndRead(gpu, squaredDistance(gpu, x, c, out), out);
  const expected = ref.squaredDistance(xData, cData, {
    tasks: T,
    queries: Q,
    centres: K,
    features: F,
  });
  assertClose(got, expected, { rtol: 1e-5, atol: 0, label: "large values" });
  for (let t = 0; t < T; t++) deepEqual(got[t * Q * K], 0);
  for (const t of [x, c, out]) t.destroy();
});

Deno.test("squaredDistanceBackward is the forward's gradient, overwriting or adding", async () => {
  const gpu = await getGpu();
  for (const [i, size] of SIZES.entries()) {
    const [T, Q, K, F] = size;
    const sizes = sizesOf(size);
    const xData = uniform(T * Q * F, 30 + i);
    const cData = uniform(T * K * F, 40 + i);
    const w = uniform(T * Q * K, 50 + i);
    const scale = i % 2 === 0 ? -1 : 1.5;
    // The reference backward against finite differences of sum(w * out), on small cases.
    if (T * (Q + K) * F <= 1000) {
      const loss = (xs: ArrayLike<number>, cs: ArrayLike<number>) =>
        ref.squaredDistance(xs, cs, { ...sizes, scale }).reduce((s, v, j) => s + w[j]! * v, 0);
      const grads = ref.squaredDistanceBackward(w, xData, cData, { ...sizes, scale });
      const fdX = finiteDifference((xs) => loss(xs, cData), xData);
      const fdC = finiteDifference((cs) => loss(xData, cs), cData);
      assertClose(grads.dx, fdX, { rtol: 1e-5, atol: 1e-6, label: `[${size}] dx vs fd` });
      assertClose(grads.dc, fdC, { rtol: 1e-5, atol: 1e-6, label: `[${size}] dc vs fd` });
    }
    const x = upload(gpu, [T, Q, F], xData);
    const c = upload(gpu, [T, K, F], cData);
    const dOut = upload(gpu, [T, Q, K], w);
    for (const accumulate of [false, true]) {
      const initial = { dx: uniform(T * Q * F, 60 + i), dc: uniform(T * K * F, 70 + i) };
      const dx = upload(gpu, [T, Q, F], initial.dx);
      const dc = upload(gpu, [T, K, F], initial.dc);
      run(
        gpu,
        squaredDistanceBackward(gpu, dOut, {
          x,
          c,
          dx,
          dc,
          scale,
          accumulate: { dx: accumulate, dc: accumulate },
        }),
      );
      const expected = ref.squaredDistanceBackward(w, xData, cData, {
        ...sizes,
        scale,
        initial: accumulate ? initial : undefined,
      });
      const label = `[${size}] accumulate=${accumulate}`;
      assertClose(await read(gpu, dx), expected.dx, {
        rtol: 1e-4,
        atol: 1e-5,
        label: `${label} dx`,
      });
      assertClose(await read(gpu, dc), expected.dc, {
        rtol: 1e-4,
        atol: 1e-5,
        label: `${label} dc`,
      });
      dx.destroy();
      dc.destroy();
    }
    for (const t of [x, c, dOut]) t.destroy();
  }
});

Deno.test("the tape's ProtoNet head: prototypes as means, logits -d, both gradients", async () => {
  const gpu = await getGpu();
  // T = 2 episodes, N = 3 classes, K = 2 shots, Q = 4 queries, F = 5 features.
  const [T, N, K, Q, F] = [2, 3, 2, 4, 5];
  const supportData = uniform(T * N * K * F, 81);
  const queryData = uniform(T * Q * F, 82);
  const w = uniform(T * Q * N, 83);
  // averaging[t, n, n * K + j] = 1 / K: the class means of class-major support rows.
  const averaging = new Float32Array(T * N * N * K);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      for (let j = 0; j < K; j++) averaging[(t * N + n) * N * K + n * K + j] = 1 / K;
    }
  }
  const sizes = { tasks: T, queries: Q, centres: N, features: F, scale: -1 };
  const prototypesOf = (s: ArrayLike<number>) => {
    const out = new Float64Array(T * N * F);
    for (let t = 0; t < T; t++) {
      for (let n = 0; n < N; n++) {
        for (let j = 0; j < K; j++) {
          for (let f = 0; f < F; f++) {
            out[(t * N + n) * F + f]! += s[((t * N + n) * K + j) * F + f]! / K;
          }
        }
      }
    }
    return out;
  };
  const loss = (s: ArrayLike<number>, q: ArrayLike<number>) =>
    ref.squaredDistance(q, prototypesOf(s), sizes).reduce((acc, v, j) => acc + w[j]! * v, 0);

  const support = upload(gpu, [T, N * K, F], supportData);
  const query = upload(gpu, [T, Q, F], queryData);
  const mean = upload(gpu, [T, N, N * K], averaging);
  const dRoot = upload(gpu, [T, Q, N], w);
  const dSupport = createTensor(gpu, [T, N * K, F]);
  const dQuery = createTensor(gpu, [T, Q, F]);
  const tape = new Tape(gpu);
  const s = tape.param(support, dSupport);
  const q = tape.param(query, dQuery);
  const prototypes = tape.linear(tape.input(mean), s);
  const logits = tape.squaredDistance(q, prototypes, { scale: -1 });
  tape.buildBackward(logits, dRoot);
  run(gpu, [...tape.forward, ...tape.backward]);
  assertClose(
    await read(gpu, logits.tensor),
    ref.squaredDistance(queryData, prototypesOf(supportData), sizes),
    { rtol: 1e-5, atol: 1e-5, label: "logits" },
  );
  const fdS = finiteDifference((xs) => loss(xs, queryData), supportData);
  const fdQ = finiteDifference((xs) => loss(supportData, xs), queryData);
  assertClose(await read(gpu, dSupport), fdS, { rtol: 1e-3, atol: 1e-4, label: "d support" });
  assertClose(await read(gpu, dQuery), fdQ, { rtol: 1e-3, atol: 1e-4, label: "d query" });
  tape.destroy();
  for (const t of [support, query, mean, dRoot, dSupport, dQuery]) t.destroy();
});

Deno.test("the tape accumulates a distance gradient onto a variable's earlier one", async () => {
  const gpu = await getGpu();
  // d = dist(x, x): x is both the queries and the centres, so its gradient is dx + dc.
  const [T, Q, F] = [1, 4, 3];
  const xData = uniform(T * Q * F, 91);
  const w = uniform(T * Q * Q, 92);
  const sizes = { tasks: T, queries: Q, centres: Q, features: F };
  const x = upload(gpu, [T, Q, F], xData);
  const dx = createTensor(gpu, [T, Q, F]);
  const dRoot = upload(gpu, [T, Q, Q], w);
  const tape = new Tape(gpu);
  const v = tape.param(x, dx);
  const d = tape.squaredDistance(v, v);
  tape.buildBackward(d, dRoot);
  run(gpu, [...tape.forward, ...tape.backward]);
  const fd = finiteDifference(
    (xs) => ref.squaredDistance(xs, xs, sizes).reduce((s, val, j) => s + w[j]! * val, 0),
    xData,
  );
  assertClose(await read(gpu, dx), fd, { rtol: 1e-3, atol: 1e-4, label: "dx of dist(x, x)" });
  tape.destroy();
  for (const t of [x, dx, dRoot]) t.destroy();
});

Deno.test("squaredDistance rejects mismatched shapes", async () => {
  const gpu = await getGpu();
  const x = createTensor(gpu, [2, 3, 4]);
  const c = createTensor(gpu, [2, 5, 4]);
  const out = createTensor(gpu, [2, 3, 5]);
  const rejects = (f: () => unknown, message: RegExp) => throws(f, { name: "RangeError", message });
  rejects(() => squaredDistance(gpu, x, createTensor(gpu, [2, 5, 3]), out), /\[2, K, 4\]/);
  rejects(() => squaredDistance(gpu, x, createTensor(gpu, [1, 5, 4]), out), /\[2, K, 4\]/);
  rejects(
    () => squaredDistance(gpu, x, c, createTensor(gpu, [2, 5, 3])),
    /out of shape \[2, 3, 5\]/,
  );
  rejects(() => squaredDistance(gpu, x.reshape([6, 4]), c, out), /x \[T, Q, F\]/);
  rejects(
    () => squaredDistanceBackward(gpu, out, { x, c, dx: createTensor(gpu, [2, 3, 5]) }),
    /dx of shape \[2, 3, 4\]/,
  );
  rejects(() => squaredDistanceBackward(gpu, out, { x, c, dc: c }), /buffer of x, c or dOut/);
  rejects(() => squaredDistance(gpu, x, c, out, { scale: NaN }), /finite/);
  for (const t of [x, c, out]) t.destroy();
});
