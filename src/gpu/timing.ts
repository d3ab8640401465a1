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
 * Devices whose timestamps were caught reading far less than the wall clock around the same work.
 * Seen on llvmpipe (Mesa 22.3): after some sequences that ran conv2d's tiled backward weight
 * (which binds 1 x 1 placeholder textures), timestamps went on missing every kernel without
 * texture bindings (0.2 ms read for 450 ms of work, which ran), and the tuner picked a kernel 10
 * times slower than the one it rejected.
 */
const wrongTimestamps = new WeakSet<GPUDevice>();

/**
 * The clock `gpuMilliseconds` uses on `gpu` now: "timestamp-query" where the adapter has the
 * feature and its timestamps have not been caught wrong, else "wall clock".
 */
export function timerName(gpu: Gpu): "timestamp-query" | "wall clock" {
  return gpu.features.has("timestamp-query") && !wrongTimestamps.has(gpu.device)
    ? "timestamp-query"
    : "wall clock";
}

/** Work that took this much longer by the wall clock than by the timestamps (ms), and ... */
const WALL_EXCESS = 50;
/** ... at least this many times as long, shows the timestamps wrong. */
const WALL_FACTOR = 2;

/**
 * Milliseconds the GPU spent on `list` as `encode` records it (one compute pass, split around any
 * texture copies, which count), from timestamp queries where {@linkcode timerName} says so (and
 * the adapter writes them: some drivers grant the feature but write zeros), else the wall clock
 * around submit and completion. Timestamps that read far less than the wall clock around them
 * (by more than 50 ms and a factor of 2; a submit-and-wait costs about 11) are not believed:
 * that time is the wall clock's, and from then on the device is timed by the wall clock.
 */
export async function gpuMilliseconds(gpu: Gpu, list: readonly Dispatch[]): Promise<number> {
  const t0 = performance.now();
  if (timerName(gpu) === "wall clock") {
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
    const wall = performance.now() - t0;
    if (end! <= begin!) return wall;
    const ms = Number(end! - begin!) / 1e6;
    if (!timestampsBelievable(ms, wall)) {
      wrongTimestamps.add(gpu.device);
      return wall;
    }
    return ms;
  } finally {
    querySet.destroy();
    resolved.destroy();
    readback.destroy();
  }
}

/**
 * Whether `ms` read from timestamps can be the time of work that took `wall` ms from submit to
 * completion: not when the wall clock is more than 50 ms and twice as long.
 */
export function timestampsBelievable(ms: number, wall: number): boolean {
  return !(wall - ms > WALL_EXCESS && wall > WALL_FACTOR * ms);
}

/**
 * `measure()`, and once more if the clock of `gpuMilliseconds` changed while it ran (timestamps
 * caught wrong), so that all the timings it compares come from one clock.
 */
export async function withOneClock<T>(gpu: Gpu, measure: () => Promise<T>): Promise<T> {
  const clock = timerName(gpu);
  const result = await measure();
  return timerName(gpu) === clock ? result : await measure();
}

/**
 * Milliseconds of one run of `dispatches` (as {@linkcode gpuMilliseconds}), after a warm-up run
 * outside the timer (it may compile pipelines, which would make timestamps look wrong).
 */
export async function warmMilliseconds(gpu: Gpu, dispatches: readonly Dispatch[]): Promise<number> {
  run(gpu, dispatches);
  await sync(gpu);
  return await gpuMilliseconds(gpu, dispatches);
}

/**
 * The least milliseconds one timed pass should last on `gpu`'s clock now: 2 with timestamps
 * (the pass's own start is then a small part of it), 100 by the wall clock (beside about 11 ms
 * of submit and wait).
 */
export function passTarget(gpu: Gpu): number {
  return timerName(gpu) === "wall clock" ? 100 : 2;
}

/**
 * How many copies of work that took `once` ms one pass needs to last >= `target` ms (at most
 * `max`).
 */
export function copiesFor(once: number, max: number, target = 2): number {
  return Math.max(1, Math.min(max, Math.ceil(target / Math.max(once, 1e-3))));
}

/** After a warm-up, {@linkcode copiesFor} the time of one run of `dispatches` on `gpu`'s clock. */
export async function passCopies(
  gpu: Gpu,
  dispatches: readonly Dispatch[],
  max: number,
): Promise<number> {
  return copiesFor(await warmMilliseconds(gpu, dispatches), max, passTarget(gpu));
}

/** Median GPU seconds of one run of `dispatches` over 5 timed passes of {@linkcode passCopies}. */
export function kernelSeconds(gpu: Gpu, dispatches: readonly Dispatch[]): Promise<number> {
  return withOneClock(gpu, async () => {
    const copies = await passCopies(gpu, dispatches, 256);
    const list = Array.from({ length: copies }, () => dispatches).flat();
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push((await gpuMilliseconds(gpu, list)) / copies / 1000);
    return median(times);
  });
}

/** Options of {@linkcode wallSeconds}. */
export interface WallOptions {
  /** Timed blocks (default 5); the median is returned. */
  repeats?: number;
  /** The least seconds one block of repeats between two waits lasts (default 0.25). */
  minBlock?: number;
}

/**
 * A timer of `work` (which submits GPU work and returns; it gets the 0-based index of the call):
 * after a warm-up call, sized so that one block of calls between two waits lasts >= `minBlock`
 * seconds; each call of the returned function times one such block and returns seconds per call.
 * Timers of several kinds of work can then be called in turn (interleaved), so that a change in
 * the machine's speed falls on all of them alike.
 */
export async function blockTimer(
  gpu: Gpu,
  work: (i: number) => void,
  minBlock = 0.25,
): Promise<() => Promise<number>> {
  let calls = 0;
  const block = async (n: number) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) work(calls++);
    await sync(gpu);
    return (performance.now() - t0) / 1000;
  };
  await block(1);
  let inner = 1;
  while (inner < 4096 && (await block(inner)) < minBlock) inner *= 2;
  return async () => (await block(inner)) / inner;
}

/**
 * Median wall-clock seconds of one call of `work` (which submits GPU work and returns), after a
 * warm-up; see the module's note on blocks and {@linkcode blockTimer}.
 */
export async function wallSeconds(
  gpu: Gpu,
  work: (i: number) => void,
  options: WallOptions = {},
): Promise<number> {
  const time = await blockTimer(gpu, work, options.minBlock ?? 0.25);
  const times: number[] = [];
  for (let i = 0; i < (options.repeats ?? 5); i++) times.push(await time());
  return median(times);
}

/** The median of `values` (the upper one of an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
