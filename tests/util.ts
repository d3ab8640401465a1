/**
 * Helpers shared by the tests: seeded random numbers, tolerant comparison, and a GPU round trip.
 *
 * @module
 */
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import { type Dispatch, run } from "../src/gpu/kernel.ts";
import { read, type Tensor, tensorFrom } from "../src/gpu/tensor.ts";
import { join } from "node:path";

export { getGpu, type Gpu };

/** A seeded generator of uniform numbers in [0, 1) (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` uniform values in [lo, hi) from a seeded generator. */
export function uniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/**
 * Throws unless |actual - expected| <= atol + rtol * |expected| everywhere; the message names the
 * worst element.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  options: { rtol?: number; atol?: number; label?: string } = {},
): void {
  const { rtol = 1e-4, atol = 1e-5, label = "values" } = options;
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length ${actual.length} differs from expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ` +
        `(rtol ${rtol}, atol ${atol}, ${actual.length} elements)`,
    );
  }
}

/** Uploads `data` as a tensor of `shape`. */
export function upload(gpu: Gpu, shape: number[], data: Float32Array | Uint32Array): Tensor {
  return tensorFrom(gpu, shape, data);
}

/** Runs dispatches and reads back `out`. */
export async function runAndRead(
  gpu: Gpu,
  dispatches: Dispatch[],
  out: Tensor,
): Promise<Float32Array> {
  run(gpu, dispatches);
  return await read(gpu, out);
}

/**
 * Central finite differences of a scalar function `f` at `x`, for the indices `at` (all by
 * default); computed in float64 so the reference gradient is accurate.
 */
export function finiteDifference(
  f: (x: Float64Array) => number,
  x: ArrayLike<number>,
  options: { eps?: number; at?: number[] } = {},
): Float64Array {
  const eps = options.eps ?? 1e-3;
  const xs = Float64Array.from(x);
  const grad = new Float64Array(xs.length);
  for (const i of options.at ?? xs.keys()) {
    const keep = xs[i]!;
    xs[i] = keep + eps;
    const up = f(xs);
    xs[i] = keep - eps;
    const down = f(xs);
    xs[i] = keep;
    grad[i] = (up - down) / (2 * eps);
  }
  return grad;
}

/** The project's root folder. */
export const ROOT = new URL("..", import.meta.url).pathname;

/** What a run of the command line printed and returned. */
export interface CliOutput {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/**
 * Runs main.ts in a child process from the project root, with the permissions of the deno.json
 * tasks (read, write, env) plus `allow` (e.g. "--allow-run" for sweeps), and `env` added to (or
 * with `clearEnv`, instead of) the environment.
 */
export async function runMain(
  args: string[],
  options: { allow?: string[]; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<CliOutput> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      ...(options.allow ?? []),
      join(ROOT, "main.ts"),
      ...args,
    ],
    cwd: ROOT,
    env: options.env,
    clearEnv: options.clearEnv,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}
