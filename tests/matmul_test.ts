import assert, { throws } from "node:assert/strict";
import { Arena, createTensor, read, type Tensor, write } from "../src/gpu/tensor.ts";
import type { Activation } from "../src/ops/activation.ts";
import { chunkTasks, setStagingRows, STAGING_ROWS } from "../src/gpu/texture.ts";
import {
  matmul,
  MATMUL_VARIANTS,
  type MatmulOptions,
  type MatmulVariant,
} from "../src/ops/matmul.ts";
import { matmul as matmulRef, transpose } from "./reference/matmul.ts";
import {
  assertClose,
  finiteDifference,
  getGpu,
  type Gpu,
  runAndRead,
  uniform,
  upload,
} from "./util.ts";

const VARIANTS = MATMUL_VARIANTS;
const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;

/** A problem: sizes, logical operands op(a) [T, M, K] and op(b) [T, K, N], options. */
interface Case {
  T: number;
  M: number;
  K: number;
  N: number;
  transA?: boolean;
  transB?: boolean;
  activation?: Activation;
  bias?: boolean;
  scale?: number;
  slope?: number;
  accumulate?: boolean;
  variant?: MatmulVariant;
  /** Range of the random inputs (default 1). */
  magnitude?: number;
}

/** Runs one case on the GPU and on the reference; returns both outputs. */
async function runCase(gpu: Gpu, c: Case, seed: number) {
  const { T, M, K, N, transA = false, transB = false, magnitude = 1 } = c;
  // Random logical operands, then stored in the layout the flags ask for.
  const a = uniform(T * M * K, seed, -magnitude, magnitude);
  const b = uniform(T * K * N, seed + 1, -magnitude, magnitude);
  const bias = c.bias ? uniform(T * N, seed + 2) : undefined;
  const old = c.accumulate ? uniform(T * M * N, seed + 3) : undefined;
  const ta = upload(gpu, transA ? [T, K, M] : [T, M, K], transA ? transpose(a, T, M, K) : a);
  const tb = upload(gpu, transB ? [T, N, K] : [T, K, N], transB ? transpose(b, T, K, N) : b);
  const tBias = bias ? upload(gpu, [T, N], bias) : undefined;
  const out = createTensor(gpu, [T, M, N]);
  if (old) write(gpu, out, old);
  const options: MatmulOptions = {
    transA,
    transB,
    bias: tBias,
    activation: c.activation,
    slope: c.slope,
    scale: c.scale,
    accumulate: c.accumulate,
    variant: c.variant,
  };
  const got = await runAndRead(gpu, matmul(gpu, ta, tb, out, options), out);
  const want = matmulRef(a, b, {
    T,
    M,
    K,
    N,
    bias,
    activation: c.activation,
    slope: c.slope,
    scale: c.scale,
    accumulateInto: old,
  });
  for (const t of [ta, tb, tBias, out]) t?.destroy();
  return { got, want };
}

function label(c: Case): string {
  return `T=${c.T} ${c.M}x${c.K}x${c.N} transA=${!!c.transA} transB=${!!c.transB} ` +
    `${c.variant ?? "tiled"} ${c.activation ?? "identity"}${c.bias ? " bias" : ""}` +
    `${c.scale !== undefined ? ` scale=${c.scale}` : ""}${c.accumulate ? " accumulate" : ""}`;
}

async function check(gpu: Gpu, c: Case, seed: number): Promise<void> {
  const { got, want } = await runCase(gpu, c, seed);
  // f32 sums of K products of magnitude <= 1 against a float64 reference.
  assertClose(got, want, { rtol: 1e-4, atol: 2e-6 * Math.max(1, c.K), label: label(c) });
}

Deno.test("matmul matches the reference for every transpose, every variant, odd and aligned sizes", async () => {
  const gpu = await getGpu();
  // [T, M, K, N]: odd sizes (scalar-load path), multiples of 4 (vec4 path), and K % 4 != 0 with
  // M, N % 4 == 0 (vec4 path only with transA and not transB). Between them the op picks every
  // register blocking (1..4 x 1..2 blocks of 4 x 4 per invocation).
  const shapes = [
    [1, 1, 1, 1],
    [1, 3, 5, 7],
    [3, 33, 17, 65],
    [1, 65, 130, 31],
    [3, 20, 12, 40],
    [2, 36, 8, 100],
    [1, 4, 100, 4],
    [2, 8, 7, 12],
    [2, 52, 16, 136],
    [1, 1, 8, 36],
    [2, 5, 12, 36],
    [1, 13, 9, 8],
  ] as const;
  let seed = 1;
  for (const [T, M, K, N] of shapes) {
    for (const [transA, transB] of TRANSPOSES) {
      for (const variant of VARIANTS) {
        await check(gpu, { T, M, K, N, transA, transB, variant }, seed++);
      }
    }
  }
});

Deno.test("matmul fuses bias, every activation and scale", async () => {
  const gpu = await getGpu();
  const activations: Activation[] = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"];
  let seed = 100;
  for (const [T, M, K, N] of [[2, 9, 12, 20], [1, 5, 7, 3]] as const) {
    for (const activation of activations) {
      for (const variant of VARIANTS) {
        await check(gpu, { T, M, K, N, activation, bias: true, variant, slope: 0.2 }, seed++);
        await check(gpu, { T, M, K, N, activation, scale: -0.5, variant, transB: true }, seed++);
      }
    }
  }
});

Deno.test("matmul accumulates into the output", async () => {
  const gpu = await getGpu();
  let seed = 200;
  for (const [T, M, K, N] of [[2, 12, 8, 16], [3, 7, 5, 9]] as const) {
    for (const [transA, transB] of TRANSPOSES) {
      for (const variant of VARIANTS) {
        await check(gpu, { T, M, K, N, transA, transB, accumulate: true, variant }, seed++);
      }
    }
    await check(gpu, { T, M, K, N, accumulate: true, scale: 2 }, seed++);
  }
});

Deno.test("matmul on a larger batched shape", async () => {
  const gpu = await getGpu();
  await check(gpu, { T: 2, M: 200, K: 300, N: 150, bias: true, activation: "relu" }, 300);
  await check(gpu, { T: 2, M: 200, K: 300, N: 152, transB: true }, 301);
  await check(gpu, { T: 2, M: 200, K: 300, N: 152, transA: true, variant: "naive" }, 302);
  await check(gpu, { T: 2, M: 70, K: 45, N: 66, transA: true, variant: "workgroup" }, 303);
  await check(gpu, { T: 2, M: 130, K: 33, N: 70, transB: true, variant: "workgroup_large" }, 304);
  // Partial 128 x 128 tiles on both sides and a last step of k shorter than 8, every layout.
  let seed = 305;
  for (const [transA, transB] of TRANSPOSES) {
    const c = { T: 2, M: 150, K: 37, N: 131, transA, transB, variant: "workgroup_128" } as const;
    await check(gpu, { ...c, bias: true, activation: "leaky_relu" }, seed++);
  }
});

Deno.test("matmul gives no NaN for large inputs through tanh and sigmoid", async () => {
  const gpu = await getGpu();
  for (const activation of ["tanh", "sigmoid"] as const) {
    for (const [K, N] of [[12, 8], [5, 7]] as const) {
      const c: Case = { T: 1, M: 6, K, N, activation, bias: true, magnitude: 1e3 };
      const { got, want } = await runCase(gpu, c, 400);
      for (const v of got) {
        if (!Number.isFinite(v)) throw new Error(`${label(c)}: non-finite output ${v}`);
      }
      assertClose(got, want, { rtol: 1e-4, atol: 1e-5, label: label(c) });
    }
  }
});

Deno.test("matmul handles tensors at offsets in shared buffers and 2-D operands", async () => {
  const gpu = await getGpu();
  const [M, K, N] = [12, 16, 20];
  const inputs = new Arena(gpu);
  inputs.add("pad", [3]);
  inputs.add("a", [M, K]);
  inputs.add("b", [K, N]);
  inputs.add("bias", [N]);
  inputs.allocate();
  const outputs = new Arena(gpu);
  outputs.add("pad", [5]);
  outputs.add("out", [M, N]);
  outputs.allocate();
  const a = uniform(M * K, 500);
  const b = uniform(K * N, 501);
  const bias = uniform(N, 502);
  write(gpu, inputs.get("a"), a);
  write(gpu, inputs.get("b"), b);
  write(gpu, inputs.get("bias"), bias);
  const out = outputs.get("out");
  const want = matmulRef(a, b, { T: 1, M, K, N, bias, activation: "tanh" });
  for (const variant of VARIANTS) {
    const ops = matmul(gpu, inputs.get("a"), inputs.get("b"), out, {
      bias: inputs.get("bias"),
      activation: "tanh",
      variant,
    });
    assertClose(await runAndRead(gpu, ops, out), want, { atol: 1e-5, label: variant });
  }
  // Neighbours of the output in its buffer are untouched.
  const flat = await read(gpu, outputs.flat);
  for (let i = 0; i < 5; i++) {
    if (flat[i] !== 0) throw new Error(`Element ${i} before the output was overwritten`);
  }
  inputs.destroy();
  outputs.destroy();
});

Deno.test("matmul gives the same bits run to run, every variant", async () => {
  const gpu = await getGpu();
  for (const variant of VARIANTS) {
    const c: Case = { T: 2, M: 33, K: 40, N: 48, bias: true, activation: "sigmoid", variant };
    const first = await runCase(gpu, c, 600);
    const second = await runCase(gpu, c, 600);
    for (let i = 0; i < first.got.length; i++) {
      if (!Object.is(first.got[i], second.got[i])) {
        throw new Error(`${variant}: element ${i} differs`);
      }
    }
  }
});

/**
 * The gradients of L = sum(w * op(a) @ op(b)) as the tape builds them from matmul:
 * dA = dOut @ op(b)^T and dB = op(a)^T @ dOut, each stored in its operand's layout.
 */
function gradientOps(
  gpu: Gpu,
  t: { a: Tensor; b: Tensor; dOut: Tensor; dA: Tensor; dB: Tensor },
  options: { transA: boolean; transB: boolean; accumulate: boolean; variant: MatmulVariant },
) {
  const { a, b, dOut, dA, dB } = t;
  const { transA, transB, accumulate, variant } = options;
  return {
    dA: transA
      ? matmul(gpu, b, dOut, dA, { transA: transB, transB: true, accumulate, variant })
      : matmul(gpu, dOut, b, dA, { transB: !transB, accumulate, variant }),
    dB: transB
      ? matmul(gpu, dOut, a, dB, { transA: true, transB: transA, accumulate, variant })
      : matmul(gpu, a, dOut, dB, { transA: !transA, accumulate, variant }),
  };
}

Deno.test("matmul composes its own gradients (checked against finite differences)", async () => {
  const gpu = await getGpu();
  const [T, M, K, N] = [2, 3, 5, 4];
  let seed = 700;
  for (const [transA, transB] of TRANSPOSES) {
    // Stored operands (in their own layouts) and the weights w of the scalar loss.
    const aStored = uniform(T * M * K, seed++);
    const bStored = uniform(T * K * N, seed++);
    const w = uniform(T * M * N, seed++);
    const loss = (aS: ArrayLike<number>, bS: ArrayLike<number>) => {
      const a = transA ? transpose(aS, T, K, M) : aS;
      const b = transB ? transpose(bS, T, N, K) : bS;
      const y = matmulRef(a, b, { T, M, K, N });
      return y.reduce((s, v, i) => s + v * w[i]!, 0);
    };
    const wantA = finiteDifference((x) => loss(x, bStored), aStored);
    const wantB = finiteDifference((x) => loss(aStored, x), bStored);
    // The same composition on the reference, which must agree with finite differences.
    const refA = transA
      ? matmulRef(bStored, w, { T, M: K, K: N, N: M, transA: transB, transB: true })
      : matmulRef(w, bStored, { T, M, K: N, N: K, transB: !transB });
    const refB = transB
      ? matmulRef(w, aStored, { T, M: N, K: M, N: K, transA: true, transB: transA })
      : matmulRef(aStored, w, { T, M: K, K: M, N, transA: !transA });
    const tag = `transA=${transA} transB=${transB}`;
    assertClose(refA, wantA, { atol: 1e-6, label: `reference dA ${tag}` });
    assertClose(refB, wantB, { atol: 1e-6, label: `reference dB ${tag}` });

    const a = upload(gpu, transA ? [T, K, M] : [T, M, K], aStored);
    const b = upload(gpu, transB ? [T, N, K] : [T, K, N], bStored);
    const dOut = upload(gpu, [T, M, N], w);
    const dA = createTensor(gpu, a.shape);
    const dB = createTensor(gpu, b.shape);
    for (const variant of VARIANTS) {
      for (const accumulate of [false, true]) {
        // With accumulate the gradients land on top of what is there: start from ones.
        const start = accumulate ? 1 : 0;
        write(gpu, dA, new Float32Array(dA.size).fill(start));
        write(gpu, dB, new Float32Array(dB.size).fill(start));
        const ops = gradientOps(gpu, { a, b, dOut, dA, dB }, {
          transA,
          transB,
          accumulate,
          variant,
        });
        const gotA = await runAndRead(gpu, ops.dA, dA);
        const gotB = await runAndRead(gpu, ops.dB, dB);
        const l = `${tag} ${variant} accumulate=${accumulate}`;
        assertClose(gotA, refA.map((v) => v + start), { atol: 1e-5, label: `dA ${l}` });
        assertClose(gotB, refB.map((v) => v + start), { atol: 1e-5, label: `dB ${l}` });
      }
    }
    for (const t of [a, b, dOut, dA, dB]) t.destroy();
  }
});

Deno.test("matmul rejects mismatched shapes, options and aliasing", async () => {
  const gpu = await getGpu();
  const made: Tensor[] = [];
  const tensor = (shape: number[]) => {
    const t = createTensor(gpu, shape);
    made.push(t);
    return t;
  };
  const a = tensor([2, 3, 4]);
  const b = tensor([2, 4, 5]);
  const out = tensor([2, 3, 5]);
  throws(() => matmul(gpu, a, tensor([2, 5, 5]), out), RangeError);
  throws(() => matmul(gpu, a, tensor([1, 4, 5]), out), RangeError);
  throws(() => matmul(gpu, a, b, tensor([2, 3, 4])), RangeError);
  throws(() => matmul(gpu, a, b, tensor([30])), RangeError);
  throws(() => matmul(gpu, a, b, out, { transA: true }), RangeError);
  throws(() => matmul(gpu, a, b, out, { bias: tensor([2, 4]) }), RangeError);
  throws(() => matmul(gpu, a, b, out, { accumulate: true, activation: "relu" }), RangeError);
  throws(
    () => matmul(gpu, a, b, out, { accumulate: true, bias: tensor([2, 5]) }),
    RangeError,
  );
  // The output may not live in an input's buffer (WebGPU forbids it within one dispatch).
  throws(() => matmul(gpu, a, tensor([2, 4, 4]), a.reshape([2, 3, 4])), RangeError);
  for (const t of made) t.destroy();
});

Deno.test("matmul tiled_texture runs in chunks of batch entries when they outgrow the staging texture", async () => {
  const gpu = await getGpu();
  // 2 rows of 1024 texels a layer: 2 of the 3 batch entries of 64 x 64 operands fit, so the
  // product runs as chunks of 2 and 1 entries.
  setStagingRows(gpu, 2);
  try {
    const [T, M, K, N] = [3, 64, 64, 64];
    assert.equal(chunkTasks(gpu, T, [M * K, K * N]), 2);
    const a = createTensor(gpu, [T, M, K]);
    const b = createTensor(gpu, [T, K, N]);
    const out = createTensor(gpu, [T, M, N]);
    const [d] = matmul(gpu, a, b, out, { variant: "tiled_texture" });
    assert.equal(d!.then?.length, 1);
    assert.equal(d!.copies?.length, 2);
    for (const t of [a, b, out]) t.destroy();
    let seed = 500;
    for (const [transA, transB] of TRANSPOSES) {
      const c = { T, M, K, N, transA, transB, variant: "tiled_texture" } as const;
      await check(gpu, c, seed++);
      await check(gpu, { ...c, bias: true, activation: "leaky_relu", slope: 0.2 }, seed++);
      await check(gpu, { ...c, accumulate: true }, seed++);
    }
  } finally {
    setStagingRows(gpu, STAGING_ROWS);
  }
});
