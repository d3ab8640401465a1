/**
 * Kernel autotuning: ops with several variants (e.g. register-blocked kernels for software
 * rasterisers, workgroup-memory tiles for GPUs) ask `tunedDispatch` for a dispatch; the variant is
 * the cached winner for (adapter and driver, kernel, shape class), or the built-in default until
 * `tunePending` has timed the candidates of every shape class first seen since. The winners live
 * in a small JSON file under the user's cache folder, so a choice made once is reused by every
 * later run on the same adapter and driver, and a step never changes kernels while it trains.
 *
 * Settings: `configureTuning` or the environment: SUPERNET_TUNE_CACHE (the cache file) and
 * SUPERNET_TUNE=off (built-in defaults, nothing read or written).
 *
 * @module
 */
import type { Gpu } from "./device.ts";
import { type Dispatch, sync, uniformsOf } from "./kernel.ts";
import {
  copiesFor,
  gpuMilliseconds,
  passTarget,
  timerName,
  warmMilliseconds,
  withOneClock,
} from "./timing.ts";

/** One op's request for a tuned dispatch. */
export interface TuneRequest {
  /** Kernel family and pass, e.g. "matmul" or "conv2d.forward". */
  kernel: string;
  /** Shapes that share a winner, e.g. "nn T1 M256 N256 K256" (sizes rounded up to powers of 2). */
  shapeClass: string;
  /** The candidates; the first is the built-in default. */
  variants: readonly string[];
  /** Builds the single dispatch of `variant` for the caller's tensors. */
  build: (variant: string) => Dispatch;
  /**
   * Builds `variant` on fresh tensors of the same shapes for timing, so that timing never writes
   * into the caller's buffers; `destroy` frees them.
   */
  measure: (variant: string) => { dispatch: Dispatch; destroy: () => void };
}

/** The record of one tuned shape class in the cache file. */
export interface TuneEntry {
  /** The fastest variant. */
  winner: string;
  /** Median milliseconds per dispatch of every candidate. */
  ms: Record<string, number>;
  /** How the candidates were timed: "timestamp-query" or "wall clock". */
  timer: string;
  /** When they were timed (ISO 8601). */
  measured: string;
  /**
   * The revision of the timing method ({@linkcode TIMING_REVISION}); entries of an older one
   * (absent: timestamps believed without checking them against the wall clock) are timed again.
   */
  timing?: number;
}

/**
 * Revision of how candidates are timed, kept in each cache entry. 2: timestamps checked against
 * the wall clock (llvmpipe's were found wrong, and winners chosen on them could be 10 times
 * slower), and warm-ups outside the timer.
 */
export const TIMING_REVISION = 2;

/** The cache file: per adapter key, per "kernel: shape class", the winner. */
export interface TuneCache {
  /** Format version. */
  version: 1;
  /** Winners by adapter key, then by "kernel: shape class". */
  adapters: Record<string, Record<string, TuneEntry>>;
}

/** Settings of the tuner for one device. */
export interface TuneSettings {
  /** "auto" (default): cached winners, candidates timed by `tunePending`; "off": defaults only. */
  mode?: "auto" | "off";
  /** The cache file (default SUPERNET_TUNE_CACHE, else supernet/tune.json in the cache folder). */
  path?: string;
}

interface Pending {
  request: TuneRequest;
  /**
   * Dispatches handed out with the default, rebuilt in place once the winner is known; weakly
   * held, so programs dropped before then are not kept alive.
   */
  dispatches: WeakRef<Dispatch>[];
}

/** How to rebuild each dispatch handed out before its winner was known (its own tensors). */
const builders = new WeakMap<Dispatch, (variant: string) => Dispatch>();

interface State {
  mode: "auto" | "off";
  path: string;
  cache?: TuneCache;
  pending: Map<string, Pending>;
  /** Why the last write of the cache file failed (the winners then live in this process only). */
  saveProblem?: string;
}

const states = new WeakMap<GPUDevice, State>();

/** How much faster than the default (as a fraction of its time) another candidate must be. */
export const MARGIN = 0.1;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** SuperNet's folder in the OS cache folder (e.g. ~/.cache/supernet on Linux). */
export function userCacheDir(): string {
  const home = env("HOME") ?? env("USERPROFILE") ?? ".";
  const base = Deno.build.os === "windows"
    ? env("LOCALAPPDATA") ?? `${home}/AppData/Local`
    : Deno.build.os === "darwin"
    ? `${home}/Library/Caches`
    : env("XDG_CACHE_HOME") ?? `${home}/.cache`;
  return `${base}/supernet`;
}

/** The default cache file: SUPERNET_TUNE_CACHE, else tune.json in {@linkcode userCacheDir}. */
export function defaultTuneCachePath(): string {
  return env("SUPERNET_TUNE_CACHE") ?? `${userCacheDir()}/tune.json`;
}

function state(gpu: Gpu): State {
  let s = states.get(gpu.device);
  if (!s) {
    let off = false;
    try {
      off = Deno.env.get("SUPERNET_TUNE") === "off";
    } catch {
      // Without env permission the defaults apply: tuning on, default cache folder.
    }
    s = { mode: off ? "off" : "auto", path: defaultTuneCachePath(), pending: new Map() };
    states.set(gpu.device, s);
  }
  return s;
}

/**
 * Sets where winners are cached and whether tuning is on, for dispatches prepared from now on
 * (already cached winners are read again from the new file).
 */
export function configureTuning(gpu: Gpu, settings: TuneSettings): void {
  const s = state(gpu);
  if (settings.mode) s.mode = settings.mode;
  if (settings.path && settings.path !== s.path) {
    s.path = settings.path;
    s.cache = undefined;
  }
}

/** The current settings of the tuner for `gpu`. */
export function tuneSettings(gpu: Gpu): Required<TuneSettings> {
  const s = state(gpu);
  return { mode: s.mode, path: s.path };
}

/** Reads the cache file; an absent or unreadable file is an empty cache, a foreign one an error. */
export function readTuneCache(path: string): TuneCache {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    // Absent or unreadable (no permission, a file where a folder should be): nothing cached yet;
    // a later write reports its own problem.
    return { version: 1, adapters: {} };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const c = parsed as Partial<TuneCache> | undefined;
  if (!c || c.version !== 1 || typeof c.adapters !== "object" || c.adapters === null) {
    throw new Error(
      `Kernel tuning cache ${path} is not a SuperNet tuning file (expected JSON with version 1): ` +
        `remove it or point SUPERNET_TUNE_CACHE elsewhere`,
    );
  }
  return c as TuneCache;
}

function cache(s: State): TuneCache {
  s.cache ??= readTuneCache(s.path);
  return s.cache;
}

/**
 * The dispatch of `request` with the cached winner of its shape class, or with the default
 * (first) variant; in the second case the shape class waits for `tunePending`, which rebuilds the
 * returned dispatch in place with the winner. With tuning off, always the default.
 */
export function tunedDispatch(gpu: Gpu, request: TuneRequest): Dispatch {
  const s = state(gpu);
  const fallback = request.variants[0]!;
  if (s.mode === "off" || request.variants.length === 1) return request.build(fallback);
  const key = `${request.kernel}: ${request.shapeClass}`;
  const entry = cache(s).adapters[gpu.adapterKey]?.[key];
  // A class timed before a candidate existed (a newer version of SuperNet), or by an older
  // timing method, is timed again.
  const complete = entry !== undefined && entry.timing === TIMING_REVISION &&
    request.variants.every((v) => v in entry.ms);
  if (complete && request.variants.includes(entry.winner)) return request.build(entry.winner);
  const dispatch = { ...request.build(fallback) };
  builders.set(dispatch, request.build);
  const pending = s.pending.get(key);
  if (pending) pending.dispatches.push(new WeakRef(dispatch));
  else s.pending.set(key, { request, dispatches: [new WeakRef(dispatch)] });
  return dispatch;
}

/** The number of shape classes waiting to be timed. */
export function pendingTuneCount(gpu: Gpu): number {
  return state(gpu).pending.size;
}

/** What `tunePending` did for one shape class. */
export interface TuneResult extends TuneEntry {
  /** Kernel family and pass. */
  kernel: string;
  /** Shape class. */
  shapeClass: string;
}

/**
 * Times the candidates of every shape class first seen since the last call, records the winners
 * in the cache file and rebuilds the dispatches handed out meanwhile with them. `onResult` is
 * called after each shape class (for progress output).
 */
export async function tunePending(
  gpu: Gpu,
  options: { onResult?: (r: TuneResult) => void } = {},
): Promise<TuneResult[]> {
  const s = state(gpu);
  const results: TuneResult[] = [];
  if (s.mode === "off" || s.pending.size === 0) return results;
  for (const [key, { request, dispatches }] of s.pending) {
    const fallback = request.variants[0]!;
    const ms = await withOneClock(gpu, () => timeCandidates(gpu, request));
    const timer = timerName(gpu);
    // The default stays unless another candidate is clearly faster (timings of sub-millisecond
    // kernels on a busy machine jitter by several percent).
    const fastest = request.variants.reduce((a, b) => (ms[b]! < ms[a]! ? b : a));
    const winner = ms[fastest]! < ms[fallback]! * (1 - MARGIN) ? fastest : fallback;
    const measured = new Date().toISOString();
    const entry: TuneEntry = { winner, ms, timer, measured, timing: TIMING_REVISION };
    const c = cache(s);
    (c.adapters[gpu.adapterKey] ??= {})[key] = entry;
    for (const ref of dispatches) {
      const d = ref.deref();
      if (!d || winner === fallback) continue;
      // A dispatch of a program destroyed meanwhile binds destroyed buffers: building its
      // replacement fails validation, and it stays as it was (nothing will run it).
      gpu.device.pushErrorScope("validation");
      const fresh = (builders.get(d) ?? request.build)(winner);
      if (await gpu.device.popErrorScope()) {
        uniformsOf(fresh).forEach((u) => u.destroy());
        continue;
      }
      uniformsOf(d).forEach((u) => u.destroy());
      Object.assign(d, { copies: undefined, then: undefined }, fresh);
    }
    const result = { kernel: request.kernel, shapeClass: request.shapeClass, ...entry };
    results.push(result);
    options.onResult?.(result);
  }
  s.pending.clear();
  try {
    await writeTuneCache(s.path, cache(s));
    s.saveProblem = undefined;
  } catch (e) {
    s.saveProblem = `could not write ${s.path}: ${e instanceof Error ? e.message : e}`;
  }
  return results;
}

/**
 * Why the last `tunePending` could not write the cache file (e.g. a read-only home folder), or
 * undefined: the winners are then used by this process only.
 */
export function tuneSaveProblem(gpu: Gpu): string | undefined {
  return state(gpu).saveProblem;
}

/** Writes the cache file through a temporary file and a rename, so readers never see half. */
export async function writeTuneCache(path: string, c: TuneCache): Promise<void> {
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir !== path) await Deno.mkdir(dir, { recursive: true });
  const temp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(temp, JSON.stringify(c, null, 2) + "\n");
  await Deno.rename(temp, path);
}

/**
 * A candidate whose warm-up run took this many times the fastest candidate's is not timed
 * further: it cannot come within the margin, and on llvmpipe the slowest candidates (conv2d's
 * implicit GEMM, up to a second per dispatch at T = 64) took most of the tuning time.
 */
export const SLOW = 3;

/**
 * Copies of each candidate per timed pass, given the milliseconds of one run of each after a
 * warm-up: enough to last >= `target` ms (at most `max`), or 0 (not timed in rounds) for one
 * {@linkcode SLOW} times slower than the fastest.
 */
export function roundCopies(once: readonly number[], target = 2, max = 64): number[] {
  const best = Math.min(...once);
  return once.map((ms) => (ms > SLOW * best ? 0 : copiesFor(ms, max, target)));
}

/**
 * Median milliseconds per dispatch of every candidate: after a warm-up, 5 rounds that time each
 * candidate in turn (interleaved, so a change in the machine's load falls on all of them alike),
 * each timing enough copies in one pass to last {@linkcode passTarget} (2 ms with timestamp
 * queries, which time the pass on the GPU; else 100 ms by the wall clock around submit and
 * completion). A candidate {@linkcode SLOW}
 * times slower than the fastest after the warm-up keeps that one timing and skips the rounds.
 */
async function timeCandidates(gpu: Gpu, request: TuneRequest): Promise<Record<string, number>> {
  const built = request.variants.map((v) => ({ variant: v, ...request.measure(v) }));
  try {
    const once: number[] = [];
    for (const { dispatch } of built) once.push(await warmMilliseconds(gpu, [dispatch]));
    const target = passTarget(gpu);
    const copies = roundCopies(once, target, target > 2 ? 1024 : 64);
    const lists = built.map(({ dispatch }, i) => Array<Dispatch>(copies[i]!).fill(dispatch));
    const times: number[][] = built.map(() => []);
    for (let round = 0; round < 5; round++) {
      for (const [i, list] of lists.entries()) {
        if (list.length) times[i]!.push((await gpuMilliseconds(gpu, list)) / list.length);
      }
    }
    return Object.fromEntries(
      built.map(({ variant }, i) => [
        variant,
        times[i]!.length ? times[i]!.sort((a, b) => a - b)[2]! : once[i]!,
      ]),
    );
  } finally {
    await sync(gpu);
    for (const b of built) b.destroy();
  }
}

/** Rounds a size up to a power of 2, for shape classes. */
export function sizeClass(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}
