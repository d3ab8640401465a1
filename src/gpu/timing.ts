/**
 * Timing GPU work, for the tuner and the benchmarks. Two clocks: `gpuMilliseconds` reads the
 * GPU's own timestamps around one compute pass (kernel time alone), and `wallSeconds` times work
 * as a program runs it, submitted from JavaScript and waited for.
 *
 * Waiting is not free: Deno's WebGPU learns that submitted work has finished by polling the
 * device, and one submit-and-wait measured about 11 ms however little work it held, on an H200
 * (where a whole seed_cnn step takes a few) as on llvmpipe. So `wallSeconds` submits as many
 * repeats per wait as it takes to fill a block of `minBlock` seconds and divides, as a training
 * loop that reads its loss every few steps does.
 *
 * @module
 */
import type { Gpu } from "./device.ts";
import { type Dispatch, encode, run, sync } from "./kernel.ts";

/**
 * Milliseconds the GPU spent on `list` as `encode` records it (one compute pass, split around any
 * texture copies, which count), from timestamp queries where the
 * adapter has them (and writes them: some drivers grant the feature but write zeros), else the
 * wall clock around submit and completion.
 */
export async function gpuMilliseconds(gpu: Gpu, list: readonly Dispatch[]): Promise<number> {
  const t0 = performance.now();
  if (!gpu.features.has("timestamp-query")) {
    run(gpu, list);
    await sync(gpu);
    return performance.now() - t0;
  }
  const querySet = gpu.device.createQuerySet({ type: "timestamp", count: 2 });
  const resolved = gpu.device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const readback = gpu.device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const encoder = gpu.device.createCommandEncoder();
    encode(encoder, list, querySet);
    encoder.resolveQuerySet(querySet, 0, 2, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, readback, 0, 16);
    gpu.device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const [begin, end] = new BigUint64Array(readback.getMappedRange().slice(0));
    readback.unmap();
    return end! > begin! ? Number(end! - begin!) / 1e6 : performance.now() - t0;
  } finally {
    querySet.destroy();
    resolved.destroy();
    readback.destroy();
  }
}

/**
 * After a warm-up, how many copies of `dispatches` one pass needs to last >= 2 ms (at most
 * `max`), so that the pass's own start is a small part of its time.
 */
export async function passCopies(
  gpu: Gpu,
  dispatches: readonly Dispatch[],
  max: number,
): Promise<number> {
  await gpuMilliseconds(gpu, dispatches);
  const once = await gpuMilliseconds(gpu, dispatches);
  return Math.max(1, Math.min(max, Math.ceil(2 / Math.max(once, 1e-3))));
}

/** Median GPU seconds of one run of `dispatches` over 5 timed passes of {@linkcode passCopies}. */
export async function kernelSeconds(gpu: Gpu, dispatches: readonly Dispatch[]): Promise<number> {
  const copies = await passCopies(gpu, dispatches, 256);
  const list = Array.from({ length: copies }, () => dispatches).flat();
  const times: number[] = [];
  for (let i = 0; i < 5; i++) times.push((await gpuMilliseconds(gpu, list)) / copies / 1000);
  return median(times);
}

/** Options of {@linkcode wallSeconds}. */
export interface WallOptions {
  /** Timed blocks (default 5); the median is returned. */
  repeats?: number;
  /** The least seconds one block of repeats between two waits lasts (default 0.25). */
  minBlock?: number;
}

/**
 * Median wall-clock seconds of one call of `work` (which submits GPU work and returns), after a
 * warm-up; see the module's note on blocks. `work` gets the 0-based index of the call.
 */
export async function wallSeconds(
  gpu: Gpu,
  work: (i: number) => void,
  options: WallOptions = {},
): Promise<number> {
  let calls = 0;
  const block = async (n: number) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) work(calls++);
    await sync(gpu);
    return (performance.now() - t0) / 1000;
  };
  await block(1);
  let inner = 1;
  const minBlock = options.minBlock ?? 0.25;
  while (inner < 4096 && (await block(inner)) < minBlock) inner *= 2;
  const times: number[] = [];
  for (let i = 0; i < (options.repeats ?? 5); i++) times.push((await block(inner)) / inner);
  return median(times);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
