/**
 * Deterministic reductions (shaders/reduce.wgsl): sums over axes (bias gradients, means) and the
 * sum of squares of a whole tensor (gradient norms).
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";

/** Invocations per workgroup of reduce_rows (one output each). */
const ROWS_GROUP = 256;
/** Invocations per workgroup of the tree kernels (one workgroup per sum). */
const TREE_GROUP = 64;
/** Kept (or reduced) runs of adjacent axes the kernel addresses. */
const MAX_RUNS = 3;
/**
 * Sums at least this long get a workgroup each rather than an invocation each: then every
 * invocation of the tree reads at least 64 elements, which pays for its barriers on llvmpipe, and
 * a GPU gets workgroups enough to hide memory latency. (Measured on llvmpipe: for 256 or more
 * outputs of sums up to ~8K, one invocation per output was 2-6x faster than 256-wide trees.)
 */
const TREE_MIN_COUNT = 64 * TREE_GROUP;
/** Largest number of partial sums `sumOfSquares` writes (each from one workgroup). */
const MAX_PARTIALS = 1024;

/**
 * Prepares out (+)= scale * (sum of x over `axes`). out's size must be the product of the kept
 * dimensions, which it holds in row-major order (e.g. dy [T, R, N] over [1] gives [T, N]; a conv's
 * dy [T, B, O, H, W] over [1, 3, 4] gives [T, O]). x may have any rank whose kept and reduced axes
 * form at most three runs each, which every rank up to 6 does. Each sum runs in a fixed order, so
 * results are the same bits run to run: one invocation per output when sums are short and outputs
 * many, otherwise one workgroup per output (a single long sum then uses one workgroup; for the sum
 * of squares of a large tensor use `sumOfSquares`).
 */
export function reduceSum(
  gpu: Gpu,
  x: Tensor,
  out: Tensor,
  options: { axes: number[]; scale?: number; accumulate?: boolean },
): Dispatch[] {
  const { axes, scale = 1, accumulate = false } = options;
  expectF32({ x, out });
  if (out.buffer === x.buffer) {
    throw new RangeError("reduceSum cannot write into the buffer of its input x");
  }
  if (!Number.isFinite(scale)) throw new RangeError(`scale must be finite, got ${scale}`);
  const rank = x.shape.length;
  const reduced = new Set(axes);
  for (const a of axes) {
    if (!Number.isInteger(a) || a < 0 || a >= rank) {
      throw new RangeError(
        `reduceSum axes must be integers in [0, ${rank}) for x ${dims(x.shape)}, ` +
          `got ${dims(axes)}`,
      );
    }
  }
  if (reduced.size !== axes.length) {
    throw new RangeError(`reduceSum axes must not repeat, got ${dims(axes)}`);
  }
  const keptShape = x.shape.filter((_, i) => !reduced.has(i));
  const outputs = keptShape.reduce((s, d) => s * d, 1);
  if (out.size !== outputs) {
    throw new RangeError(
      `reduceSum of x ${dims(x.shape)} over axes ${dims(axes)} expects out to have ` +
        `${outputs} elements (${dims(keptShape)}), got ${dims(out.shape)} (${out.size} elements)`,
    );
  }
  if (outputs === 0) return [];
  const { kept, summed } = runs(x.shape, reduced);
  if (kept.length > MAX_RUNS || summed.length > MAX_RUNS) {
    throw new RangeError(
      `reduceSum handles at most ${MAX_RUNS} runs of adjacent kept axes and ${MAX_RUNS} of ` +
        `reduced ones; x ${dims(x.shape)} over axes ${dims(axes)} has ${kept.length} and ` +
        `${summed.length}`,
    );
  }
  const count = summed.reduce((s, r) => s * r.size, 1);
  const k = pad(kept);
  const r = pad(summed);
  const uniform = new Uniform(gpu, [
    ["u32", outputs],
    ["u32", count],
    ["f32", scale],
    ...k.slice(1).map((run): ["u32", number] => ["u32", run.size]),
    ...k.map((run): ["u32", number] => ["u32", run.stride]),
    ...r.map((run): ["u32", number] => ["u32", run.size]),
    ...r.map((run): ["u32", number] => ["u32", run.stride]),
  ]);
  const tree = count >= TREE_MIN_COUNT || outputs < ROWS_GROUP;
  const pipe = pipeline(gpu, "reduce", {
    entry: tree ? "reduce_tree" : "reduce_rows",
    constants: { ACCUMULATE: accumulate ? 1 : 0 },
  });
  const groups = grid(tree ? outputs : Math.ceil(outputs / ROWS_GROUP));
  return [prepare(gpu, pipe, [x, out], groups, uniform)];
}

/**
 * Prepares out[0] = sum of x[i]^2 over all elements, in two deterministic passes: each workgroup
 * writes the sum of its chunk into `scratch`, then one workgroup adds the partials in a fixed
 * order. `scratch` is created here and belongs to the caller, who destroys it with the dispatches.
 */
export function sumOfSquares(
  gpu: Gpu,
  x: Tensor,
  out: Tensor,
): { dispatches: Dispatch[]; scratch: Tensor } {
  expectF32({ x, out });
  if (out.size !== 1) {
    throw new RangeError(`sumOfSquares expects out to have 1 element, got ${dims(out.shape)}`);
  }
  if (out.buffer === x.buffer) {
    throw new RangeError("sumOfSquares cannot write into the buffer of its input x");
  }
  const n = x.size;
  // Chunks of at least 16 elements per invocation, and at most MAX_PARTIALS of them.
  const chunk = Math.max(16 * TREE_GROUP, Math.ceil(n / MAX_PARTIALS / TREE_GROUP) * TREE_GROUP);
  const parts = Math.max(1, Math.ceil(n / chunk));
  const scratch = createTensor(gpu, [parts]);
  const first = prepare(
    gpu,
    pipeline(gpu, "reduce", { entry: "sum_squares_partial" }),
    [x, scratch],
    grid(parts),
    new Uniform(gpu, [["u32", n], ["u32", chunk]]),
  );
  const second = prepare(
    gpu,
    pipeline(gpu, "reduce", { entry: "sum_squares_final" }),
    [scratch, out],
    [1, 1, 1],
    new Uniform(gpu, [["u32", parts], ["u32", chunk]]),
  );
  return { dispatches: [first, second], scratch };
}

interface Run {
  size: number;
  stride: number;
}

/**
 * Splits a row-major shape into runs of adjacent kept and adjacent reduced axes (size-1 axes
 * dropped), each run with its total size and the stride of its innermost axis.
 */
function runs(shape: readonly number[], reduced: Set<number>): { kept: Run[]; summed: Run[] } {
  const kept: Run[] = [];
  const summed: Run[] = [];
  let stride = 1;
  let last: "kept" | "summed" | undefined;
  for (let i = shape.length - 1; i >= 0; i--) {
    const size = shape[i]!;
    if (size !== 1) {
      const kind = reduced.has(i) ? "summed" : "kept";
      const list = kind === "kept" ? kept : summed;
      if (last === kind) list[0]!.size *= size;
      else list.unshift({ size, stride });
      last = kind;
    }
    stride *= size;
  }
  return { kept, summed };
}

/** Pads a list of runs at the front to MAX_RUNS with runs of size 1. */
function pad(list: Run[]): Run[] {
  return [
    ...Array.from({ length: MAX_RUNS - list.length }, () => ({ size: 1, stride: 0 })),
    ...list,
  ];
}

function expectF32(tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype !== "f32") throw new RangeError(`Expected ${name} to be f32, got ${t.dtype}`);
  }
}

/** A shape as it reads in messages: [2, 3, 4]. */
function dims(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
