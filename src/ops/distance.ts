/**
 * Squared Euclidean distances between two sets of rows per task (shaders/distance.wgsl), with
 * their gradients: ProtoNet's logits are minus the squared distance from each query embedding to
 * each class prototype.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Invocations per workgroup (one output element each). */
const GROUP = 256;

/** Sizes of a distance op: tasks T, queries Q, centres K, features F. */
interface Sizes {
  tasks: number;
  queries: number;
  centres: number;
  features: number;
}

/**
 * Prepares out[t, q, k] = scale * sum_f (x[t, q, f] - c[t, k, f])^2 for x [T, Q, F], c [T, K, F]
 * and out [T, Q, K] (`scale` default 1; -1 gives ProtoNet's logits). Each output is one
 * invocation's sum in feature order, so results are the same bits every run.
 */
export function squaredDistance(
  gpu: Gpu,
  x: Tensor,
  c: Tensor,
  out: Tensor,
  options: { scale?: number } = {},
): Dispatch[] {
  const sizes = check("squaredDistance", x, c);
  const expected = [sizes.tasks, sizes.queries, sizes.centres];
  if (out.dtype !== "f32" || !sameShape(out.shape, expected)) {
    throw new RangeError(
      `squaredDistance of x ${dims(x.shape)} and c ${dims(c.shape)} expects f32 out of shape ` +
        `${dims(expected)}, got ${out.dtype} ${dims(out.shape)}`,
    );
  }
  if (out.buffer === x.buffer || out.buffer === c.buffer) {
    throw new RangeError("squaredDistance cannot write out into the buffer of x or c");
  }
  if (out.size === 0) return [];
  const uniform = params(gpu, sizes, options.scale);
  const pipe = pipeline(gpu, "distance", { entry: "squared_distance" });
  return [prepare(gpu, pipe, [x, c, out], grid(Math.ceil(out.size / GROUP)), uniform)];
}

/**
 * Prepares the gradients of {@linkcode squaredDistance} from dOut [T, Q, K]:
 * dx[t, q, f] (+)= 2 scale * sum_k dOut[t, q, k] (x[t, q, f] - c[t, k, f]) and
 * dc[t, k, f] (+)= 2 scale * sum_q dOut[t, q, k] (c[t, k, f] - x[t, q, f]); either may be left
 * out. With `accumulate`, a gradient is added to what its tensor holds. Deterministic: each
 * gradient element is one invocation's sum in a fixed order.
 */
export function squaredDistanceBackward(
  gpu: Gpu,
  dOut: Tensor,
  options: {
    x: Tensor;
    c: Tensor;
    dx?: Tensor;
    dc?: Tensor;
    scale?: number;
    accumulate?: { dx?: boolean; dc?: boolean };
  },
): Dispatch[] {
  const { x, c, dx, dc } = options;
  const sizes = check("squaredDistanceBackward", x, c);
  const expected = [sizes.tasks, sizes.queries, sizes.centres];
  if (dOut.dtype !== "f32" || !sameShape(dOut.shape, expected)) {
    throw new RangeError(
      `squaredDistanceBackward of x ${dims(x.shape)} and c ${dims(c.shape)} expects f32 dOut of ` +
        `shape ${dims(expected)}, got ${dOut.dtype} ${dims(dOut.shape)}`,
    );
  }
  const dispatches: Dispatch[] = [];
  for (const [name, grad, like] of [["dx", dx, x], ["dc", dc, c]] as const) {
    if (!grad) continue;
    if (grad.dtype !== "f32" || !sameShape(grad.shape, like.shape)) {
      throw new RangeError(
        `squaredDistanceBackward expects f32 ${name} of shape ${dims(like.shape)}, got ` +
          `${grad.dtype} ${dims(grad.shape)}`,
      );
    }
    if ([x, c, dOut].some((t) => t.buffer === grad.buffer)) {
      throw new RangeError(
        `squaredDistanceBackward cannot write ${name} into the buffer of x, c or dOut`,
      );
    }
    if (grad.size === 0) continue;
    const pipe = pipeline(gpu, "distance", {
      entry: `squared_distance_backward_${name.slice(1)}`,
      constants: { ACCUMULATE: options.accumulate?.[name] ? 1 : 0 },
    });
    const uniform = params(gpu, sizes, options.scale);
    const groups = grid(Math.ceil(grad.size / GROUP));
    dispatches.push(prepare(gpu, pipe, [x, c, dOut, grad], groups, uniform));
  }
  return dispatches;
}

/** The uniform block of shaders/distance.wgsl. */
function params(gpu: Gpu, sizes: Sizes, scale = 1): Uniform {
  if (!Number.isFinite(scale)) throw new RangeError(`scale must be finite, got ${scale}`);
  return new Uniform(gpu, [
    ["u32", sizes.tasks],
    ["u32", sizes.queries],
    ["u32", sizes.centres],
    ["u32", sizes.features],
    ["f32", scale],
  ]);
}

/** Validates f32 x [T, Q, F] and c [T, K, F]; returns the sizes. */
function check(op: string, x: Tensor, c: Tensor): Sizes {
  if (x.dtype !== "f32" || c.dtype !== "f32" || x.shape.length !== 3 || c.shape.length !== 3) {
    throw new RangeError(
      `${op} expects f32 x [T, Q, F] and c [T, K, F], got ${x.dtype} ${dims(x.shape)} and ` +
        `${c.dtype} ${dims(c.shape)}`,
    );
  }
  const [tasks, queries, features] = x.shape as [number, number, number];
  const [cTasks, centres, cFeatures] = c.shape as [number, number, number];
  if (cTasks !== tasks || cFeatures !== features) {
    throw new RangeError(
      `${op} expects c of shape [${tasks}, K, ${features}] for x ${dims(x.shape)}, got ` +
        `${dims(c.shape)}`,
    );
  }
  return { tasks, queries, centres, features };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A shape as it reads in messages: [2, 3, 4]. */
function dims(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
