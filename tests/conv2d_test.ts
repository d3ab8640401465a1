import assert from "node:assert/strict";
import { sync } from "../src/gpu/kernel.ts";
import { createTensor, read, STORAGE_USAGE, Tensor, write } from "../src/gpu/tensor.ts";
import { chunkTasks, setStagingRows, STAGING_ROWS } from "../src/gpu/texture.ts";
import type { Activation } from "../src/ops/activation.ts";
import {
  conv2d,
  conv2dBackwardBias,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dOutputSize,
  type Conv2dVariant,
} from "../src/ops/conv2d.ts";
import {
  conv2d as conv2dRef,
  conv2dBackward as conv2dBackwardRef,
  type ConvShape,
  outputSize,
} from "./reference/conv2d.ts";
import {
  assertClose,
  finiteDifference,
  getGpu,
  type Gpu,
  runAndRead,
  uniform,
  upload,
} from "./util.ts";

/** The shapes of x, w, bias and y of a convolution. */
function shapes(s: ConvShape) {
  const { ho, wo } = outputSize(s);
  return {
    x: [s.tasks, s.batch, s.cin, s.h, s.w],
    w: [s.tasks, s.cout, s.cin, s.k, s.k],
    bias: [s.tasks, s.cout],
    y: [s.tasks, s.batch, s.cout, ho, wo],
  };
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function describe(s: ConvShape): string {
  return `T${s.tasks} B${s.batch} C${s.cin} ${s.h}x${s.w} O${s.cout} k${s.k} ` +
    `s${s.stride ?? 1} p${s.padding ?? 0}`;
}

/** Random inputs of a convolution, seeded by `seed`. */
function inputs(s: ConvShape, seed: number) {
  const sh = shapes(s);
  return {
    x: uniform(size(sh.x), seed),
    w: uniform(size(sh.w), seed + 1, -0.5, 0.5),
    bias: uniform(size(sh.bias), seed + 2),
    dy: uniform(size(sh.y), seed + 3),
  };
}

// Kernel sizes 1, 3, 5 (and others), strides 1, 2 (and others), paddings 0, 1, 2, odd sizes,
// C and O of 1, 3, 16 and more, T = 1 and 3, B = 1 and 2: sizes that are and are not multiples
// of the tiled kernels' blocks (16 channels, 4 columns, 2 or 4 rows, 64 invocations).
const CONFIGS: ConvShape[] = [
  { tasks: 1, batch: 1, cin: 1, h: 7, w: 7, cout: 1, k: 1 },
  { tasks: 1, batch: 2, cin: 3, h: 7, w: 9, cout: 3, k: 3, stride: 1, padding: 1 },
  { tasks: 3, batch: 1, cin: 1, h: 9, w: 7, cout: 16, k: 3, stride: 2, padding: 0 },
  { tasks: 3, batch: 2, cin: 3, h: 9, w: 9, cout: 16, k: 5, stride: 2, padding: 2 },
  { tasks: 1, batch: 2, cin: 16, h: 7, w: 7, cout: 3, k: 5, stride: 1, padding: 2 },
  { tasks: 3, batch: 2, cin: 16, h: 9, w: 7, cout: 16, k: 1, stride: 2, padding: 1 },
  { tasks: 2, batch: 1, cin: 5, h: 8, w: 10, cout: 7, k: 3, stride: 3, padding: 1 },
  { tasks: 1, batch: 3, cin: 2, h: 6, w: 6, cout: 20, k: 4, stride: 2, padding: 0 },
  { tasks: 2, batch: 2, cin: 16, h: 4, w: 4, cout: 16, k: 5, stride: 2, padding: 2 },
  // Wo a multiple of 4 (whole-vec4 rows of dy), two channel blocks, the second partial.
  { tasks: 2, batch: 3, cin: 5, h: 7, w: 8, cout: 18, k: 3, stride: 1, padding: 1 },
  // Taps split over several windows: forward (stride 3: 4 taps per window), backward input
  // (stride 1: 10 taps per window).
  { tasks: 1, batch: 2, cin: 2, h: 11, w: 10, cout: 5, k: 5, stride: 3, padding: 2 },
  { tasks: 1, batch: 1, cin: 3, h: 13, w: 14, cout: 4, k: 11, stride: 1, padding: 3 },
  // Phase grids at least 8 wide (backward input takes 8 columns per invocation), partly filled.
  { tasks: 1, batch: 2, cin: 3, h: 10, w: 17, cout: 5, k: 3, stride: 1, padding: 1 },
  { tasks: 2, batch: 1, cin: 4, h: 9, w: 19, cout: 6, k: 4, stride: 2, padding: 1 },
  // Beyond the tiled kernels (stride 5, kernel 23): the naive kernels are used.
  { tasks: 2, batch: 1, cin: 2, h: 12, w: 11, cout: 3, k: 3, stride: 5, padding: 1 },
  { tasks: 1, batch: 1, cin: 1, h: 24, w: 23, cout: 2, k: 23, stride: 1, padding: 0 },
];

/** A small seed_cnn-like layer (5x5, stride 2, padding 2), and one the tiled kernels refuse. */
const SMALL = CONFIGS[3]!;
const UNTILED = CONFIGS.find((c) => c.stride === 5)!;

const VARIANTS: readonly Conv2dVariant[] = ["tiled", "tiled_texture", "gemm", "direct", "naive"];

const ACTIVATIONS: Activation[] = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"];

async function forward(
  gpu: Gpu,
  s: ConvShape,
  data: ReturnType<typeof inputs>,
  options: { activation?: Activation; slope?: number; variant?: Conv2dVariant },
): Promise<Float32Array> {
  const sh = shapes(s);
  const x = upload(gpu, sh.x, data.x);
  const w = upload(gpu, sh.w, data.w);
  const bias = upload(gpu, sh.bias, data.bias);
  const y = createTensor(gpu, sh.y);
  const dispatches = conv2d(gpu, x, w, bias, y, {
    stride: s.stride,
    padding: s.padding,
    ...options,
  });
  const out = await runAndRead(gpu, dispatches, y);
  for (const t of [x, w, bias, y]) t.destroy();
  return out;
}

Deno.test("conv2d forward matches the reference for every variant", async () => {
  const gpu = await getGpu();
  for (const [i, s] of CONFIGS.entries()) {
    const data = inputs(s, 100 + i);
    const expected = conv2dRef(s, data);
    for (const variant of VARIANTS) {
      const out = await forward(gpu, s, data, { variant });
      assertClose(out, expected, { label: `${variant} ${describe(s)}` });
    }
  }
});

Deno.test("conv2d forward applies every activation", async () => {
  const gpu = await getGpu();
  const s = SMALL;
  const data = inputs(s, 7);
  for (const activation of ACTIVATIONS) {
    for (const variant of VARIANTS) {
      const slope = 0.2;
      const out = await forward(gpu, s, data, { activation, slope, variant });
      const expected = conv2dRef(s, { ...data, activation, slope });
      assertClose(out, expected, { label: `${variant} ${activation}` });
    }
  }
});

Deno.test("conv2d tanh and sigmoid stay finite for large pre-activations", async () => {
  const gpu = await getGpu();
  const s: ConvShape = { tasks: 1, batch: 1, cin: 1, h: 3, w: 3, cout: 2, k: 1 };
  const data = inputs(s, 3);
  data.x.set([100, -100, 50, -50, 0, 1e4, -1e4, 3, -3]);
  data.w.set([1, 1]);
  data.bias.set([0, 0]);
  for (const activation of ["tanh", "sigmoid"] as const) {
    const out = await forward(gpu, s, data, { activation });
    assertClose(out, conv2dRef(s, { ...data, activation }), { label: activation });
  }
});

/** Runs the three backward kernels; returns dx, dw, dbias. */
async function backward(
  gpu: Gpu,
  s: ConvShape,
  data: ReturnType<typeof inputs>,
  options: { accumulate?: boolean; start?: number; variant?: Conv2dVariant } = {},
): Promise<{ dx: Float32Array; dw: Float32Array; dbias: Float32Array }> {
  const sh = shapes(s);
  const x = upload(gpu, sh.x, data.x);
  const w = upload(gpu, sh.w, data.w);
  const dy = upload(gpu, sh.y, data.dy);
  const start = (shape: number[]): Tensor =>
    upload(gpu, shape, new Float32Array(size(shape)).fill(options.start ?? 0));
  const dx = start(sh.x);
  const dw = start(sh.w);
  const dbias = start(sh.bias);
  const o = {
    stride: s.stride,
    padding: s.padding,
    accumulate: options.accumulate,
    variant: options.variant,
  };
  const dispatches = [
    ...conv2dBackwardInput(gpu, dy, w, dx, o),
    ...conv2dBackwardWeight(gpu, x, dy, dw, o),
    ...conv2dBackwardBias(gpu, dy, dbias, { accumulate: options.accumulate }),
  ];
  const out = {
    dx: await runAndRead(gpu, dispatches, dx),
    dw: await read(gpu, dw),
    dbias: await read(gpu, dbias),
  };
  for (const t of [x, w, dy, dx, dw, dbias]) t.destroy();
  return out;
}

Deno.test("conv2d backward kernels match the reference backward for every variant", async () => {
  const gpu = await getGpu();
  for (const [i, s] of CONFIGS.entries()) {
    const data = inputs(s, 200 + i);
    const expected = conv2dBackwardRef(s, data);
    for (const variant of VARIANTS) {
      const out = await backward(gpu, s, data, { variant });
      const label = `${variant} ${describe(s)}`;
      assertClose(out.dx, expected.dx, { label: `dx ${label}` });
      assertClose(out.dw, expected.dw, { label: `dw ${label}` });
      assertClose(out.dbias, expected.dbias, { label: `dbias ${label}` });
    }
  }
});

Deno.test("conv2d backward accumulates into its outputs when asked", async () => {
  const gpu = await getGpu();
  // Stride 2 (tiled kernels) and stride 5 (the naive ones).
  for (const [s, variant] of VARIANTS.flatMap((v) => [[SMALL, v], [UNTILED, v]] as const)) {
    const data = inputs(s, 11);
    const expected = conv2dBackwardRef(s, data);
    const label = `${variant} ${describe(s)}`;
    const out = await backward(gpu, s, data, { accumulate: true, start: 0.5, variant });
    assertClose(out.dx, expected.dx.map((v) => v + 0.5), { label: `dx ${label}` });
    assertClose(out.dw, expected.dw.map((v) => v + 0.5), { label: `dw ${label}` });
    assertClose(out.dbias, expected.dbias.map((v) => v + 0.5), { label: `dbias ${label}` });
    const overwritten = await backward(gpu, s, data, { accumulate: false, start: 0.5, variant });
    assertClose(overwritten.dx, expected.dx, { label: `dx without accumulate ${label}` });
    assertClose(overwritten.dw, expected.dw, { label: `dw without accumulate ${label}` });
    assertClose(overwritten.dbias, expected.dbias, { label: `dbias without accumulate ${label}` });
  }
});

Deno.test("conv2d reference backward matches finite differences of the reference forward", () => {
  const tiny: ConvShape[] = [
    { tasks: 2, batch: 2, cin: 2, h: 5, w: 4, cout: 3, k: 3, stride: 2, padding: 1 },
    { tasks: 1, batch: 1, cin: 3, h: 4, w: 5, cout: 2, k: 2, stride: 1, padding: 0 },
  ];
  for (const [i, s] of tiny.entries()) {
    const data = inputs(s, 300 + i);
    // sum(dy * y) has gradient conv2dBackward(dy) w.r.t. x, w and bias (identity activation).
    const loss = (d: { x: ArrayLike<number>; w: ArrayLike<number>; bias: ArrayLike<number> }) =>
      conv2dRef(s, d).reduce((acc, v, j) => acc + v * data.dy[j]!, 0);
    const expected = conv2dBackwardRef(s, data);
    const label = describe(s);
    assertClose(expected.dx, finiteDifference((x) => loss({ ...data, x }), data.x), {
      label: `dx ${label}`,
      atol: 1e-6,
    });
    assertClose(expected.dw, finiteDifference((w) => loss({ ...data, w }), data.w), {
      label: `dw ${label}`,
      atol: 1e-6,
    });
    assertClose(expected.dbias, finiteDifference((bias) => loss({ ...data, bias }), data.bias), {
      label: `dbias ${label}`,
      atol: 1e-6,
    });
  }
});

Deno.test("conv2d on a seed_cnn first layer (T2 B4 C3 32x32 O16 k5 s2 p2)", async () => {
  const gpu = await getGpu();
  const s: ConvShape = {
    tasks: 2,
    batch: 4,
    cin: 3,
    h: 32,
    w: 32,
    cout: 16,
    k: 5,
    stride: 2,
    padding: 2,
  };
  assert.deepEqual(outputSize(s), { ho: 16, wo: 16 });
  const data = inputs(s, 400);
  for (const variant of VARIANTS) {
    const out = await forward(gpu, s, data, { activation: "leaky_relu", variant });
    assertClose(out, conv2dRef(s, { ...data, activation: "leaky_relu" }), { label: variant });
  }
  const expected = conv2dBackwardRef(s, data);
  for (const variant of ["tiled", "tiled_texture", "gemm", "direct"] as const) {
    const out = await backward(gpu, s, data, { variant });
    assertClose(out.dx, expected.dx, { label: `dx ${variant}` });
    assertClose(out.dw, expected.dw, { label: `dw ${variant}`, atol: 1e-4 });
    assertClose(out.dbias, expected.dbias, { label: `dbias ${variant}`, atol: 1e-4 });
  }
});

Deno.test("conv2d backward weight and bias are bitwise deterministic, every variant", async () => {
  const gpu = await getGpu();
  const s = SMALL;
  const data = inputs(s, 500);
  for (const variant of VARIANTS) {
    const first = await backward(gpu, s, data, { variant });
    const second = await backward(gpu, s, data, { variant });
    assert.deepEqual(second.dw, first.dw, variant);
    assert.deepEqual(second.dx, first.dx, variant);
    assert.deepEqual(second.dbias, first.dbias, variant);
  }
});

Deno.test("conv2d falls back to the naive kernels for a buffer that ends inside a vec4", async () => {
  const gpu = await getGpu();
  const s: ConvShape = { tasks: 1, batch: 1, cin: 1, h: 7, w: 7, cout: 2, k: 3, padding: 1 };
  const data = inputs(s, 21);
  // 49 floats: the tiled kernels read x as vec4s and would need 52.
  const buffer = gpu.device.createBuffer({ size: 49 * 4, usage: STORAGE_USAGE });
  const x = new Tensor(buffer, [1, 1, 1, 7, 7]);
  write(gpu, x, data.x);
  const w = upload(gpu, [1, 2, 1, 3, 3], data.w);
  const bias = upload(gpu, [1, 2], data.bias);
  const y = createTensor(gpu, [1, 1, 2, 7, 7]);
  const out = await runAndRead(gpu, conv2d(gpu, x, w, bias, y, { padding: 1 }), y);
  assertClose(out, conv2dRef(s, data), { label: "forward" });
  const dw = createTensor(gpu, [1, 2, 1, 3, 3]);
  const dy = upload(gpu, [1, 1, 2, 7, 7], data.dy);
  const grad = await runAndRead(gpu, conv2dBackwardWeight(gpu, x, dy, dw, { padding: 1 }), dw);
  assertClose(grad, conv2dBackwardRef(s, data).dw, { label: "backward weight" });
  for (const t of [w, bias, y, dw, dy]) t.destroy();
  buffer.destroy();
});

Deno.test("conv2d rejects mismatched shapes and bad options", async () => {
  const gpu = await getGpu();
  const made: Tensor[] = [];
  const t = (shape: number[]) => {
    const tensor = createTensor(gpu, shape);
    made.push(tensor);
    return tensor;
  };
  const x = t([2, 1, 3, 8, 8]);
  const w = t([2, 4, 3, 3, 3]);
  const bias = t([2, 4]);
  const y = t([2, 1, 4, 6, 6]);
  assert.equal(conv2dOutputSize(8, { k: 3 }), 6);
  assert.throws(() => conv2d(gpu, x, w, bias, y, { padding: 1 }), RangeError);
  assert.throws(() => conv2d(gpu, x, t([1, 4, 3, 3, 3]), bias, y), RangeError);
  assert.throws(() => conv2d(gpu, x, t([2, 4, 2, 3, 3]), bias, y), RangeError);
  assert.throws(() => conv2d(gpu, x, t([2, 4, 3, 3, 2]), bias, y), RangeError);
  assert.throws(() => conv2d(gpu, x, w, t([4]), y), RangeError);
  assert.throws(() => conv2d(gpu, x, w, bias, y, { stride: 0 }), RangeError);
  assert.throws(() => conv2d(gpu, x, w, bias, y, { padding: -1 }), RangeError);
  assert.throws(() => conv2d(gpu, x, t([2, 4, 3, 9, 9]), bias, y), RangeError);
  assert.throws(() => conv2d(gpu, t([2, 1, 3, 8]), w, bias, y), RangeError);
  assert.throws(() => conv2dBackwardInput(gpu, y, w, t([2, 1, 3, 9, 9])), RangeError);
  assert.throws(() => conv2dBackwardWeight(gpu, x, y, t([2, 4, 3, 5, 5])), RangeError);
  assert.throws(() => conv2dBackwardBias(gpu, y, t([2, 5])), RangeError);
  assert.throws(() => conv2dBackwardBias(gpu, bias, bias), RangeError);
  // The shapes that were refused above are accepted when they match.
  conv2d(gpu, x, w, bias, y);
  conv2dBackwardInput(gpu, y, w, x);
  await sync(gpu);
  for (const tensor of made) tensor.destroy();
});

Deno.test("conv2d backward weight tiled_texture runs in chunks of tasks when they outgrow the staging texture", async () => {
  const gpu = await getGpu();
  // 2 rows of 1024 texels a layer hold dy (1024 texels a task here) of 2 of the 3 tasks: chunks
  // of 2 and 1 tasks.
  setStagingRows(gpu, 2);
  try {
    const s: ConvShape = {
      tasks: 3,
      batch: 4,
      cin: 3,
      h: 16,
      w: 16,
      cout: 16,
      k: 5,
      stride: 2,
      padding: 2,
    };
    const { ho, wo } = outputSize(s);
    const perTask = [s.batch * s.cin * s.h * s.w, s.batch * s.cout * ho * wo];
    assert.equal(chunkTasks(gpu, s.tasks, perTask), 2);
    const data = inputs(s, 600);
    const expected = conv2dBackwardRef(s, data);
    for (const accumulate of [false, true]) {
      const start = accumulate ? 0.5 : 0;
      const out = await backward(gpu, s, data, { variant: "tiled_texture", accumulate, start });
      assertClose(out.dw, expected.dw.map((v) => v + start), { label: `dw ${accumulate}` });
      assertClose(out.dx, expected.dx.map((v) => v + start), { label: `dx ${accumulate}` });
    }
  } finally {
    setStagingRows(gpu, STAGING_ROWS);
  }
});
