/**
 * `deno task bench`: kernel throughput of every variant (matmul, the batched task conv2d of
 * seed_cnn), the CPU's fp32 GEMM peak measured in the same run through an optimised BLAS (the best
 * of numpy and PyTorch, with the library each reports), training-step throughput of the SuperNet
 * with the tuned kernels, batched over T tasks vs a per-task loop, the few-shot conv4 step in
 * episodes per second, peak GPU memory per step, adaptation speed, and the peers (PyTorch on both
 * steps, TensorFlow.js). Writes benchmarks.json and benchmarks.md, every figure in it from this
 * run, into runs/bench (`--out docs` replaces the committed page); prints progress while it runs.
 *
 * Timing: every measurement is the median of >= 5 timed repeats after a warm-up; a repeat submits
 * the work and ends with `onSubmittedWorkDone`.
 *
 * @module
 */
import { join } from "node:path";
import { type Flag, HELP_FLAG, parseFlags, usage, UsageError } from "./cli/flags.ts";
import type { BatchSource } from "./engine.ts";
import { StepProgram } from "./engine.ts";
import { adaptRows } from "./bench_adapt.ts";
import { getGpu, type Gpu } from "./gpu/device.ts";
import { type Dispatch, run, sync } from "./gpu/kernel.ts";
import { blockTimer, kernelSeconds, median, wallSeconds } from "./gpu/timing.ts";
import { createTensor, type Tensor, tensorFrom } from "./gpu/tensor.ts";
import { releaseStaging, stagingLive } from "./gpu/texture.ts";
import {
  configureTuning,
  readTuneCache,
  tunePending,
  type TuneResult,
  tuneSettings,
} from "./gpu/tune.ts";
import { headScaleOf } from "./model/generator.ts";
import { SuperNet, superNetConfig } from "./model/supernet.ts";
import { Tape } from "./tape.ts";
import {
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  type Conv2dVariant,
} from "./ops/conv2d.ts";
import { matmul, MATMUL_VARIANTS } from "./ops/matmul.ts";
import { optimizerConfig, ParamGroup } from "./optim.ts";
import {
  gpuYardstick,
  installPeers,
  type PeerStepDescription,
  peerVenv,
  pythonCandidates,
  type PythonReport,
  pythonReport,
  strongestTorch,
  type TorchDescribedStep,
  torchDescribedStep,
  type TorchStep,
  torchStep,
  yardstick,
  yardstickProblem,
} from "./peers/python.ts";
import { Random } from "./random.ts";

/** One benchmark row. */
export interface BenchRow {
  /** Group, e.g. "matmul". */
  group: string;
  /** What was measured. */
  name: string;
  /** Median seconds per repeat. */
  seconds: number;
  /** GFLOP/s, for kernels. */
  gflops?: number;
  /** Images per second, for training steps. */
  imagesPerSecond?: number;
  /** Bytes, for memory rows. */
  bytes?: number;
  /** A ratio, for rows that compare (e.g. memory peak / its lower bound). */
  ratio?: number;
}

/** Reports progress: one line per measurement as it starts or ends. */
export type Progress = (line: string) => void;

/**
 * Seconds of one run of `dispatches` alone: on a GPU with timestamp queries the GPU's own time
 * (a wait there costs more than most kernels, see src/gpu/timing.ts); elsewhere the wall clock,
 * with enough repeats per submit to make `flop` (when given) about 2e8 (on llvmpipe tens of
 * milliseconds, beside about 11 of waiting), as earlier runs measured it.
 */
async function kernelTime(gpu: Gpu, dispatches: Dispatch[], flop?: number): Promise<number> {
  if (gpuClock(gpu)) {
    return await kernelSeconds(gpu, dispatches);
  }
  const repeat = flop ? Math.min(1000, Math.max(1, Math.round(2e8 / flop))) : 1;
  const list = Array.from({ length: repeat }, () => dispatches).flat();
  return (await wallSeconds(gpu, () => run(gpu, list))) / repeat;
}

/** Kernels are timed by the GPU's own clock: a hardware adapter with timestamp queries. */
function gpuClock(gpu: Gpu): boolean {
  return !gpu.isFallback && gpu.features.has("timestamp-query");
}

function random(n: number, seed: number): Float32Array {
  return new Random(seed).fillUniform(new Float32Array(n), 1);
}

async function matmulRows(
  gpu: Gpu,
  sizes: number[],
  heads: [number, number, number][],
  progress: Progress,
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const shapes: [string, number, number, number][] = [
    ...sizes.map((s) => [`${s}x${s}x${s}`, s, s, s] as [string, number, number, number]),
    ...heads.map(([t, k, n]) =>
      [`generator head [${t},${k}]x[${k},${n}]`, t, k, n] as [string, number, number, number]
    ),
  ];
  for (const [label, M, K, N] of shapes) {
    const a = tensorFrom(gpu, [M, K], random(M * K, 1));
    const b = tensorFrom(gpu, [K, N], random(K * N, 2));
    const out = createTensor(gpu, [M, N]);
    const flop = 2 * M * N * K;
    for (const variant of MATMUL_VARIANTS) {
      // The naive kernel beyond 1024^3, and on a software adapter the 128 x 128 tiles beyond it,
      // would take minutes and teach nothing new.
      const slow = variant === "naive" || (gpu.isFallback && variant === "workgroup_128");
      if (slow && M * N * K > 1024 ** 3) continue;
      progress(`matmul ${label} ${variant}`);
      const seconds = await kernelTime(gpu, matmul(gpu, a, b, out, { variant }), flop);
      rows.push({
        group: "matmul",
        name: `${label} ${variant}`,
        seconds,
        gflops: flop / seconds / 1e9,
      });
    }
    a.destroy();
    b.destroy();
    out.destroy();
  }
  return rows;
}

async function convRows(
  gpu: Gpu,
  sizes: { T: number; B: number },
  progress: Progress,
): Promise<BenchRow[]> {
  const { T, B } = sizes;
  const rows: BenchRow[] = [];
  // seed_cnn on 32x32x3: 3->16 at 32x32, then 16->16 at 16x16 (5x5, stride 2, padding 2).
  for (const [C, H] of [[3, 32], [16, 16]] as const) {
    const O = 16;
    const Ho = H / 2;
    const x = tensorFrom(gpu, [T, B, C, H, H], random(T * B * C * H * H, 3));
    const w = tensorFrom(gpu, [T, O, C, 5, 5], random(T * O * C * 25, 4));
    const bias = tensorFrom(gpu, [T, O], random(T * O, 5));
    const y = createTensor(gpu, [T, B, O, Ho, Ho]);
    const dx = createTensor(gpu, [T, B, C, H, H]);
    const dw = createTensor(gpu, [T, O, C, 5, 5]);
    const flop = 2 * T * B * O * Ho * Ho * C * 25;
    const opts = { stride: 2, padding: 2 };
    const cases: [string, () => Dispatch[]][] = [];
    // On a GPU the "direct" kernels (its forward is the naive one); on a software adapter, where
    // the tuner never times them, the naive forward as the baseline.
    const variants: Conv2dVariant[] = gpu.isFallback
      ? ["tiled", "gemm", "naive"]
      : ["tiled", "gemm", "direct"];
    for (const variant of variants) {
      const o = { ...opts, variant };
      cases.push([
        `forward ${variant}`,
        () => conv2d(gpu, x, w, bias, y, { ...o, activation: "leaky_relu" }),
      ]);
      if (variant === "naive") continue;
      cases.push([`backward input ${variant}`, () => conv2dBackwardInput(gpu, y, w, dx, o)]);
      cases.push([`backward weight ${variant}`, () => conv2dBackwardWeight(gpu, x, y, dw, o)]);
    }
    // The one pass that reads through the staging texture (see conv2dCandidates).
    cases.push([
      "backward weight tiled_texture",
      () => conv2dBackwardWeight(gpu, x, y, dw, { ...opts, variant: "tiled_texture" }),
    ]);
    for (const [name, prepareCase] of cases) {
      progress(`conv2d T=${T} B=${B} ${C}->${O} ${H}x${H}: ${name}`);
      const d = prepareCase();
      const seconds = await kernelTime(gpu, d);
      rows.push({
        group: "conv2d",
        name: `T=${T} B=${B} ${C}->${O} ${H}x${H} k5 s2: ${name}`,
        seconds,
        gflops: flop / seconds / 1e9,
      });
    }
    for (const t of [x, w, bias, y, dx, dw]) t.destroy();
  }
  return rows;
}

/**
 * Where a step's time goes: the forward alone, then with loss and backward, then the whole step;
 * the differences are each phase's share (later phases read what earlier ones wrote, so they run
 * in order). The three are timed in turn, 5 rounds, so that a change in the machine's speed falls
 * on all of them alike.
 */
async function breakdown(gpu: Gpu, program: StepProgram, label: string): Promise<BenchRow[]> {
  const { forward, loss, backward, update } = program.phases;
  const cumulative: [string, Dispatch[]][] = [
    ["forward (generator + target)", [...forward]],
    ["+ loss + backward", [...forward, ...loss, ...backward]],
    ["+ optimiser (whole step)", [...forward, ...loss, ...backward, ...update]],
  ];
  const timers = [];
  for (const [, list] of cumulative) timers.push(await blockTimer(gpu, () => run(gpu, list)));
  const seconds = (await interleaved(timers)).map(median);
  return cumulative.map(([name], i) => ({
    group: "step breakdown",
    name: `${label}: ${name}, +${((seconds[i]! - (seconds[i - 1] ?? 0)) * 1000).toFixed(1)} ms`,
    seconds: seconds[i]!,
  }));
}

/**
 * Seconds per call of each timer in each of `rounds` rounds that call every timer in turn; with
 * `between`, also awaited once per round after the timers (e.g. a peer's run, paired with them).
 */
export async function interleaved(
  timers: (() => Promise<number>)[],
  rounds = 5,
  between?: (round: number) => Promise<void>,
): Promise<number[][]> {
  const times: number[][] = timers.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, time] of timers.entries()) times[i]!.push(await time());
    await between?.(r);
  }
  return times;
}

/**
 * Per-kernel timings of a step: every dispatch timed alone (its inputs are whatever the previous
 * full step left, which is what it reads in a step too), summed by shader and entry point. On a
 * GPU with timestamp queries each is timed by the GPU's clock; elsewhere a submit-and-wait costs
 * milliseconds on its own, so each is timed as (9 copies in one submit - 1 copy) / 8.
 */
async function perKernel(gpu: Gpu, program: StepProgram, label: string): Promise<BenchRow[]> {
  const { forward, loss, backward, update } = program.phases;
  const byKernel = new Map<string, { seconds: number; count: number }>();
  for (
    const [phase, list] of [["forward", forward], ["backward", [...loss, ...backward]], [
      "update",
      update,
    ]] as const
  ) {
    for (const d of list) {
      const seconds = gpuClock(gpu) ? await kernelSeconds(gpu, [d]) : await nineLessOne(gpu, d);
      const kernel = `${phase} ${d.pipeline.label.split(":").slice(0, 2).join(":")}`;
      const entry = byKernel.get(kernel) ?? { seconds: 0, count: 0 };
      byKernel.set(kernel, { seconds: entry.seconds + seconds, count: entry.count + 1 });
    }
  }
  return [...byKernel.entries()]
    .sort((a, b) => b[1].seconds - a[1].seconds)
    .map(([kernel, { seconds, count }]) => ({
      group: "per kernel",
      name: `${label}: ${kernel} (${count} dispatch${count > 1 ? "es" : ""})`,
      seconds,
    }));
}

/**
 * Wall seconds of one dispatch `d`, as (9 copies in one submit - 1 copy) / 8, each submit waited
 * for (the difference cancels the wait; blocks of many submits would take minutes here).
 */
async function nineLessOne(gpu: Gpu, d: Dispatch): Promise<number> {
  const nine = Array<Dispatch>(9).fill(d);
  const options = { repeats: 3, minBlock: 0 };
  const one = await wallSeconds(gpu, () => run(gpu, [d]), options);
  return Math.max(0, (await wallSeconds(gpu, () => run(gpu, nine), options) - one) / 8);
}

/** A batch source with fixed random images, so the step measures the model alone. */
function fixedSource(gpu: Gpu, T: number, B: number, offset: number): BatchSource {
  const x = tensorFrom(gpu, [T, B, 3, 32, 32], random(T * B * 3 * 32 * 32, 9));
  const y = tensorFrom(gpu, [T, B], Float32Array.from({ length: T * B }, (_, i) => i % 2));
  const taskIndices = tensorFrom(gpu, [T], Uint32Array.from({ length: T }, (_, i) => offset + i));
  const none: Dispatch[] = [];
  return { x, y, taskIndices, next: () => none };
}

/** A peer's step (PyTorch), run between rounds of ours so that the ratio pairs them in time. */
interface PairedPeer {
  /** Task counts to pair. */
  tasks: number[];
  /** One run of the peer's step at T tasks (undefined when it could not run). */
  step: (T: number) => Promise<TorchStep | undefined>;
  /** The row's name after "seed_cnn T=.. B=.. ", e.g. "PyTorch 2.13.0+cpu, 2 threads (CPU)". */
  name: (p: TorchStep) => string;
}

/** Rounds of a paired peer's step: each a subprocess that times its own step after a warm-up. */
const PEER_ROUNDS = 3;

/**
 * The batched step and the per-task loop at each T, timed in turn (5 rounds), and at the T of
 * `pair` the peer's step after each of the first {@linkcode PEER_ROUNDS} rounds: the peer row's
 * ratio is the median of ours / the peer's per round (a machine whose speed drifts over minutes,
 * as this one's did by 1.4x, would otherwise bias a ratio of runs minutes apart).
 */
async function stepRows(
  gpu: Gpu,
  sizes: { tasks: number[]; B: number; focus: number },
  progress: Progress,
  pair?: PairedPeer,
): Promise<BenchRow[]> {
  const { tasks, B, focus } = sizes;
  const rows: BenchRow[] = [];
  const maxT = Math.max(...tasks);
  const net = SuperNet.create(gpu, superNetConfig({ inputShape: [3, 32, 32], tasks: maxT }));
  const schedule = { lr: 1e-3, kind: "constant" as const, warmup: 0, steps: 1 };
  const params = new ParamGroup(gpu, net.params, {
    optimizer: optimizerConfig("adam", 1e-3),
    schedule,
  });
  const z = new ParamGroup(gpu, net.z, { optimizer: optimizerConfig("adam", 1e-3), schedule });
  const build = async (T: number, offset: number) => {
    const program = new StepProgram(gpu, {
      source: fixedSource(gpu, T, B, offset),
      forward: (tape, inputs) =>
        net.forward(tape, { ...inputs, grads: { params: params.grads, z: z.grads } }),
      groups: [params, z],
    });
    // Shapes first seen here are tuned before the step is timed.
    await tunePending(gpu, { onResult: (r) => progress(tuneLine(r)) });
    return program;
  };
  for (const T of tasks) {
    const paired = pair?.tasks.includes(T) ? pair : undefined;
    progress(
      `training step seed_cnn T=${T} B=${B}: batched and per-task loop in turn` +
        (paired ? `, PyTorch between rounds` : ""),
    );
    const batched = await build(T, 0);
    // The per-task loop: one T = 1 step per task, each a full dispatch chain (forward, backward,
    // update), as a framework without batched per-task weights runs it.
    const loop: StepProgram[] = [];
    for (let t = 0; t < T; t++) loop.push(await build(1, t));
    const timers = [
      await blockTimer(gpu, (i) => batched.run(i + 1)),
      await blockTimer(gpu, (i) => {
        for (const p of loop) p.run(i + 1);
      }),
    ];
    const peerRuns: { round: number; step: TorchStep }[] = [];
    const [ours, theirs] = await interleaved(timers, 5, async (round) => {
      if (!paired || round >= PEER_ROUNDS) return;
      const step = await paired.step(T);
      if (step) peerRuns.push({ round, step });
    });
    for (const p of loop) p.destroy();
    const seconds = median(ours!);
    const loopSeconds = median(theirs!);
    rows.push(
      {
        group: "training step",
        name: `seed_cnn T=${T} B=${B} batched`,
        seconds,
        imagesPerSecond: (T * B) / seconds,
      },
      {
        group: "training step",
        name: `seed_cnn T=${T} B=${B} per-task loop`,
        seconds: loopSeconds,
        imagesPerSecond: (T * B) / loopSeconds,
      },
    );
    if (paired && peerRuns.length) {
      const rate = median(peerRuns.map((r) => r.step.imagesPerSecond));
      rows.push({
        group: "peer",
        name: `seed_cnn T=${T} B=${B} ${paired.name(peerRuns[0]!.step)}`,
        seconds: (T * B) / rate,
        imagesPerSecond: rate,
        ratio: median(peerRuns.map((r) => (T * B) / ours![r.round]! / r.step.imagesPerSecond)),
      });
    }
    if (T === focus) {
      progress(`step breakdown and per-kernel times at T=${T}`);
      rows.push(...(await breakdown(gpu, batched, `seed_cnn T=${T} B=${B}`)));
      rows.push(...(await perKernel(gpu, batched, `seed_cnn T=${T} B=${B}`)));
    }
    batched.destroy();
  }
  params.destroy();
  z.destroy();
  net.destroy();
  return rows;
}

/** Sizes of the few-shot step: T episodes of `ways` x `per` images, conv4 `width` channels. */
export interface FewShotSizes {
  /** Episodes per step, T. */
  tasks: number;
  /** Classes per episode, N. */
  ways: number;
  /** Images per class in an episode. */
  per: number;
  /** Channels of every conv4 block. */
  width: number;
}

/** The few-shot training step, built: what runs it, its images and the peer's description. */
export interface FewShotStep {
  /** The SuperNet whose generator writes the T conv4 networks. */
  net: SuperNet;
  /** Forward, loss, backward and Adam on generator and z, prepared once. */
  program: StepProgram;
  /** The fixed images [T, B, 1, 28, 28]; labels are i % ways. */
  x: Tensor;
  /** The row's name, e.g. "conv4 width 16 5-way T=16 B=80". */
  label: string;
  /** The same step for src/peers/torch_step.py. */
  description: PeerStepDescription;
  /** Frees everything the step made. */
  destroy(): void;
}

/** The few-shot step's name in rows and summary, e.g. "conv4 width 16 5-way T=16 B=80". */
function fewShotLabel(sizes: FewShotSizes): string {
  return `conv4 width ${sizes.width} ${sizes.ways}-way T=${sizes.tasks} B=${
    sizes.ways * sizes.per
  }`;
}

/** Adam's learning rate of the few-shot step. */
const FEW_SHOT_LR = 1e-3;

/**
 * The step of `net` on T tasks x B images with Adam at `lr` as the PyTorch peer runs it: every
 * size from the SuperNet's own config, target layers and generator parameters.
 */
export function peerDescription(
  net: SuperNet,
  sizes: { tasks: number; batch: number; lr: number },
): PeerStepDescription {
  const { generator, inputShape, outputs, slope } = net.config;
  return {
    tasks: sizes.tasks,
    batch: sizes.batch,
    input: inputShape,
    outputs,
    layers: net.spec.layers,
    slope,
    generator: {
      zDim: generator.zDim,
      hidden: generator.hidden,
      hiddenActivation: generator.hiddenActivation,
      output: generator.output,
    },
    params: net.params.entries.map(({ name, tensor }) => ({ name, shape: tensor.shape })),
    heads: net.weights.map((w) => ({
      name: w.name,
      shape: w.shape,
      scale: headScaleOf(generator, w),
    })),
    lr: sizes.lr,
  };
}

/**
 * The few-shot training step: the generator writes T conv4 networks with an N-way head (the
 * original's table of tasks, `experiment fewshot`), each classifying N x `per` fixed random 28x28
 * grey images with softmax cross-entropy; forward, backward and Adam on generator and z.
 */
export function fewShotStep(gpu: Gpu, sizes: FewShotSizes): FewShotStep {
  const { tasks: T, ways, per, width } = sizes;
  const B = ways * per;
  const net = SuperNet.create(
    gpu,
    superNetConfig({
      target: "conv4",
      width,
      inputShape: [1, 28, 28],
      outputs: ways,
      tasks: T,
      zInit: "gaussian",
    }),
  );
  const schedule = { lr: FEW_SHOT_LR, kind: "constant" as const, warmup: 0, steps: 1 };
  const optimizer = optimizerConfig("adam", FEW_SHOT_LR);
  const params = new ParamGroup(gpu, net.params, { optimizer, schedule });
  const z = new ParamGroup(gpu, net.z, { optimizer, schedule });
  const x = tensorFrom(gpu, [T, B, 1, 28, 28], random(T * B * 784, 5));
  const y = tensorFrom(gpu, [T, B], Float32Array.from({ length: T * B }, (_, i) => i % ways));
  const taskIndices = tensorFrom(gpu, [T], Uint32Array.from({ length: T }, (_, i) => i));
  const none: Dispatch[] = [];
  const program = new StepProgram(gpu, {
    source: { x, y, taskIndices, next: () => none },
    forward: (tape, inputs) =>
      net.forward(tape, { ...inputs, grads: { params: params.grads, z: z.grads } }),
    groups: [params, z],
  });
  return {
    net,
    program,
    x,
    label: fewShotLabel(sizes),
    description: peerDescription(net, { tasks: T, batch: B, lr: FEW_SHOT_LR }),
    destroy: () => {
      program.destroy();
      for (const t of [x, y, taskIndices]) t.destroy();
      params.destroy();
      z.destroy();
      net.destroy();
    },
  };
}

/** The PyTorch peer of the few-shot step, run between rounds of ours. */
export interface FewShotPeer {
  /** One run of the peer's step (undefined when it could not run). */
  step: (description: PeerStepDescription) => Promise<TorchDescribedStep | undefined>;
  /** What ran it, e.g. "PyTorch 2.13.0+cpu, 2 threads (CPU)". */
  name: (p: TorchDescribedStep) => string;
}

/**
 * The few-shot step's row (episodes per second), timed in 5 rounds, and with `pair` its PyTorch
 * peer after each of the first {@linkcode PEER_ROUNDS} rounds: the peer row's ratio is the median
 * of ours / the peer's per round, as the seed_cnn rows pair theirs.
 */
export async function fewShotStepRows(
  gpu: Gpu,
  sizes: FewShotSizes,
  options: { progress?: Progress; pair?: FewShotPeer } = {},
): Promise<BenchRow[]> {
  const { progress = () => {}, pair } = options;
  const step = fewShotStep(gpu, sizes);
  const { label, description } = step;
  const T = sizes.tasks;
  const B = description.batch;
  progress(
    `training step ${label} (few-shot episodes)` + (pair ? ", PyTorch between rounds" : ""),
  );
  await tunePending(gpu, { onResult: (r) => progress(tuneLine(r)) });
  const peerRuns: { round: number; step: TorchDescribedStep }[] = [];
  const [times] = await interleaved(
    [await blockTimer(gpu, (i) => step.program.run(i + 1))],
    5,
    async (round) => {
      if (!pair || round >= PEER_ROUNDS) return;
      const p = await pair.step(description);
      if (p) peerRuns.push({ round, step: p });
    },
  );
  const seconds = median(times!);
  const rows: BenchRow[] = [{
    group: "training step",
    name: `${label} (${step.net.parameterCount.toLocaleString("en-US")} generator parameters), ` +
      `${(T / seconds).toFixed(1)} episodes/s`,
    seconds,
    imagesPerSecond: (T * B) / seconds,
  }];
  step.destroy();
  if (pair && peerRuns.length) {
    const theirs = median(peerRuns.map((r) => r.step.seconds));
    rows.push({
      group: "peer",
      name: `${label} ${pair.name(peerRuns[0]!.step)}, ${(T / theirs).toFixed(1)} episodes/s`,
      seconds: theirs,
      imagesPerSecond: (T * B) / theirs,
      ratio: median(peerRuns.map((r) => r.step.seconds / times![r.round]!)),
    });
  }
  return rows;
}

/** One line of progress for a tuned shape class. */
function tuneLine(r: TuneResult): string {
  const times = Object.entries(r.ms).map(([v, ms]) => `${v} ${ms.toFixed(3)} ms`).join(", ");
  return `tuned ${r.kernel} [${r.shapeClass}]: ${r.winner} (${times}; ${r.timer})`;
}

/** Sum of the bytes of the tensors in `arenas`. */
function arenaBytes(...arenas: { flat: { byteLength: number } }[]): number {
  return arenas.reduce((n, a) => n + a.flat.byteLength, 0);
}

/**
 * Peak GPU memory of a training step at T tasks (the most bytes of live buffers at once while the
 * step is built and run, everything the step needs included), against its lower bound: parameters
 * + gradients + Adam's two moments (4 x the trained values) + the input batch + the forward's
 * activations (the bytes a forward-only tape allocates).
 */
export async function memoryRows(
  gpu: Gpu,
  sizes: { tasks: number[]; B: number },
  progress: Progress,
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const T of sizes.tasks) {
    progress(`peak memory of a training step at T=${T} B=${sizes.B}`);
    await sync(gpu);
    // A staging texture left by earlier rows would be shared, unseen, by this step: start without.
    releaseStaging(gpu);
    const before = gpu.memory.live;
    gpu.memory.resetPeak();
    const net = SuperNet.create(gpu, superNetConfig({ inputShape: [3, 32, 32], tasks: T }));
    const source = fixedSource(gpu, T, sizes.B, 0);
    const batch = source.x.byteLength + source.y.byteLength + source.taskIndices.byteLength;
    const trained = arenaBytes(net.params, net.z);
    const probe = new Tape(gpu);
    // Activations are the tape's tensors, not the staging textures its kernels may make.
    const beforeForward = gpu.memory.live - stagingLive(gpu);
    net.forward(probe, { x: source.x, taskIndices: source.taskIndices });
    const activations = gpu.memory.live - stagingLive(gpu) - beforeForward;
    probe.destroy();
    const schedule = { lr: 1e-3, kind: "constant" as const, warmup: 0, steps: 1 };
    const groups = [net.params, net.z].map((arena) =>
      new ParamGroup(gpu, arena, { optimizer: optimizerConfig("adam", 1e-3), schedule })
    );
    const program = new StepProgram(gpu, {
      source,
      forward: (tape, inputs) =>
        net.forward(tape, { ...inputs, grads: { params: groups[0]!.grads, z: groups[1]!.grads } }),
      groups,
    });
    await tunePending(gpu, { onResult: (r) => progress(tuneLine(r)) });
    program.run(1);
    await sync(gpu);
    const peak = gpu.memory.peak - before;
    const bound = 4 * trained + batch + activations;
    rows.push({
      group: "memory",
      name: `seed_cnn T=${T} B=${sizes.B} step peak (lower bound ${
        mib(bound)
      }: parameters, gradients and Adam state ${mib(4 * trained)} + the batch ${
        mib(batch)
      } + activations ${mib(activations)})`,
      seconds: 0,
      bytes: peak,
      ratio: peak / bound,
    });
    program.destroy();
    for (const g of groups) g.destroy();
    for (const t of [source.x, source.y, source.taskIndices]) t.destroy();
    net.destroy();
  }
  return rows;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Images/s of the same step in TensorFlow.js on WebGPU (src/peers/tfjs_step.ts), same adapter. */
async function tfjsStep(
  T: number,
  B: number,
): Promise<{ imagesPerSecond: number; detail: string } | undefined> {
  const script = new URL("./peers/tfjs_step.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", script, String(T), String(B)],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return undefined;
  const [rate, version] = new TextDecoder().decode(out.stdout).trim().split(" ");
  return { imagesPerSecond: Number(rate), detail: `TensorFlow.js ${version} WebGPU` };
}

/** The contents of a /proc file, read with cat (Deno guards /proc behind more than --allow-read). */
async function procFile(name: string): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("cat", { args: [name], stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

async function cpuName(): Promise<string> {
  const info = await procFile("/proc/cpuinfo");
  const model = info?.match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  return `${model}, ${navigator.hardwareConcurrency} cores`;
}

/** The 1-minute load average, when the OS reports one. */
async function loadAverage(): Promise<number | undefined> {
  const text = await procFile("/proc/loadavg");
  const v = Number(text?.split(" ")[0]);
  return Number.isFinite(v) ? v : undefined;
}

function table(rows: BenchRow[], peak?: number): string {
  const lines = [
    "| group | benchmark | median ms | GFLOP/s | % of GEMM peak | images/s | MiB | ratio |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.group} | ${r.name} | ${r.bytes === undefined ? (r.seconds * 1000).toFixed(2) : ""} | ${
        r.gflops?.toFixed(2) ?? ""
      } | ${r.gflops && peak ? `${((100 * r.gflops) / peak).toFixed(1)}%` : ""} | ${
        r.imagesPerSecond ? Math.round(r.imagesPerSecond).toLocaleString("en") : ""
      } | ${r.bytes === undefined ? "" : (r.bytes / 2 ** 20).toFixed(1)} | ${
        r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`
      } |`,
    );
  }
  return lines.join("\n");
}

/**
 * What the kernels' tuning tried, kept beside the numbers so a missed target comes with its
 * history; figures are not repeated here: the rows of each run measure them (tests/matmul_bench.ts
 * and tests/conv2d_bench.ts time the variants with `deno bench -A`).
 */
const TRIED = [
  "## What was tried",
  "",
  "- On llvmpipe every storage or workgroup-memory load costs about as much as tens of vector FMAs, whatever its width, so speed there comes from few loads and much reuse from registers; a GPU rewards the opposite (workgroup-memory tiles shared by many invocations). Hence two families of kernels, side by side in one WGSL file each, and a tuner that times them per adapter and shape class and caches the winner (`deno task tune`).",
  "- matmul: register blocks of 4x4 up to 32x8 outputs per invocation (16x8 kept as `tiled`); vec4 loads along the contiguous dimension; blocks written out by hand (loop-indexed register arrays spill to memory); `workgroup` and `workgroup_large`: 32x32 and 64x64 tiles staged through workgroup memory, 4x4 outputs per invocation; `workgroup_128`: 128x128 tiles, 8x8 outputs per invocation, the next k slices prefetched into registers (the fastest at 4096^3 on an H200, 30% of cuBLAS fp32).",
  "- conv2d: `tiled`: 16 output channels x 8 or 16 pixels per invocation in mat4x4 accumulators, input rows read as aligned vec4 windows with taps picked from registers, backward input split into stride^2 phases, activation as an override constant; `gemm`: implicit GEMM (no unfolded copy) through 32x32 workgroup-memory tiles, for all three passes; `direct` (GPU candidates only): one output per invocation for forward and backward input, and a workgroup per weight plane for backward weight (on an H200 the tiled kernels' 256 accumulators and 32 KB of workgroup memory per 64 invocations left most of the chip idle).",
  "- Textures (`tiled_texture`): on llvmpipe (Mesa 22.3) a storage load runs as a loop over the 8 lanes with a bounds check and a branch per lane and component (about 110 cycles per vec4, measured), a texel fetch as one vectorised gather (about 45), and a load at a constant address only takes the cheap scalar path outside any loop or branch. So the tiled matmul and conv2d's backward weight can read their operands from a staging texture (two layers of 8 MiB per device, filled by a copy just before each dispatch, in chunks of tasks when larger); forward and backward input measured no faster that way (bound by their arithmetic and spilled accumulators), and staging weights per tap row at constant workgroup-memory addresses made the forward 2x slower (the constant-address path is lost inside loops).",
  "- Deno's WebGPU learns that work finished by polling: one submit-and-wait costs about 11 ms on an H200 as on llvmpipe. A step on a GPU is timed over blocks of many submits (as training runs between loss reads) and a kernel by timestamp queries; the first GPU run, which waited on every step and had no `direct` convolutions yet, read 85,000 images/s at T = 64; the next, with both, 220,000.",
  "- The training step fuses bias and activation into the producing matmul or convolution, generates the weights of all T tasks with one matmul per head, prepares every dispatch once, and submits a whole step (batch assembly, forward, loss, backward, updates) as one command buffer.",
];

/** Options of {@linkcode bench}. */
export interface BenchOptions {
  /** Fewer sizes (a few minutes). */
  quick?: boolean;
  /** Tiny sizes only, to check the whole run end to end (seconds; figures meaningless). */
  tiny?: boolean;
  /** Folder of benchmarks.md and benchmarks.json (default runs/bench; "docs": the committed page). */
  out?: string;
  /** False: the built-in kernel defaults, no tuning (`--no-tune`). Default true. */
  tune?: boolean;
  /** The tuner's cache file (default: the tuner's, see src/gpu/tune.ts). */
  tuneCache?: string;
  /** Python interpreter to try first for the peers and the GEMM yardstick. */
  python?: string;
  /** First install a current PyTorch CPU wheel, numpy and threadpoolctl with pip (peerVenv()). */
  installPeers?: boolean;
  /** False: skip the TensorFlow.js peer (it fetches npm packages on first use). Default true. */
  tfjs?: boolean;
  /** False: skip the adaptation-speed rows. Default true. */
  adapt?: boolean;
  /** A trained run folder whose generator the adaptation rows use (default: a fresh one). */
  adaptRun?: string;
  /** Called with a line as each measurement starts. */
  onProgress?: Progress;
}

/** The sizes each mode runs; `hardware`: a GPU rather than a software adapter. */
function plan(options: BenchOptions, hardware: boolean) {
  if (options.tiny) {
    return {
      peakN: 256,
      matmul: [64],
      heads: [[2, 100, 640]] as [number, number, number][],
      conv: { T: 2, B: 4 },
      tasks: [1, 2],
      B: 4,
      focus: 2,
      memory: [2],
      peers: [2],
      adapt: { slots: [1, 2], steps: 3, batch: 4 },
      fewShot: { tasks: 2, ways: 5, per: 2, width: 4 },
    };
  }
  return {
    peakN: 2048,
    // 4096^3 is the size of the GPU target; on a CPU it would take minutes per variant.
    matmul: options.quick ? [256, 512] : [256, 512, 1024, 2048, ...(hardware ? [4096] : [])],
    heads: [[16, 100, 6400], [64, 100, 6400]] as [number, number, number][],
    conv: { T: 16, B: 32 },
    tasks: options.quick ? [1, 4, 16] : [1, 4, 16, 64],
    B: 32,
    focus: 16,
    memory: options.quick ? [16] : [16, 64],
    peers: options.quick ? [16] : [1, 16, 64],
    adapt: { slots: options.quick ? [1, 8] : [1, 8, 64], steps: 20, batch: 32 },
    // experiment fewshot's long profile: 16 episodes of 5 ways x 16 images, 64 channels.
    fewShot: { tasks: 16, ways: 5, per: 16, width: hardware ? 64 : 16 },
  };
}

/** A stated target: what, the measured value, the goal, and the verdict. */
export interface Target {
  /** What is measured, e.g. "Batched vs per-task loop at T = 16". */
  what: string;
  /** The measured value; undefined when this run did not measure it. */
  value?: number;
  /** The goal. */
  goal: number;
  /** How values print: a ratio, a percentage or images per second. */
  unit: "x" | "%" | "/s";
  /** Why no verdict can be given although a value was measured. */
  noVerdict?: string;
  /** At most (memory) rather than at least. */
  atMost?: boolean;
}

/**
 * A target as one line: the value, the goal, and "met" or "missed" (noted when the machine was
 * busy), or why no verdict is given.
 */
export function targetLine(t: Target, busy: boolean): string {
  const fmt = (v: number) =>
    t.unit === "%"
      ? `${v.toFixed(1)}%`
      : t.unit === "/s"
      ? `${Math.round(v).toLocaleString("en")} images/s`
      : `${v.toFixed(2)}x`;
  const goal = `${t.atMost ? "<=" : ">="} ${fmt(t.goal)}`;
  if (t.value === undefined) return `${t.what}: not measured in this run (target ${goal}).`;
  if (t.noVerdict) {
    return `${t.what}: ${fmt(t.value)} (target ${goal}): no verdict, ${t.noVerdict}.`;
  }
  const met = t.atMost ? t.value <= t.goal : t.value >= t.goal;
  return `${t.what}: ${fmt(t.value)} (target ${goal}: ${met ? "met" : "missed"}${
    busy ? ", on a busy machine" : ""
  }).`;
}

/** Runs the benchmarks and writes benchmarks.{json,md} into `options.out`; returns the Markdown. */
export async function bench(options: BenchOptions = {}): Promise<string> {
  const progress: Progress = options.onProgress ?? (() => {});
  const out = options.out ?? BENCH_DEFAULTS.out;
  const gpu = await getGpu();
  const hardware = !gpu.isFallback;
  const sizes = plan(options, hardware);
  if (options.tune === false) configureTuning(gpu, { mode: "off" });
  if (options.tuneCache) configureTuning(gpu, { path: options.tuneCache });
  const started = new Date().toISOString();
  const load = await loadAverage();
  const cores = navigator.hardwareConcurrency;
  const busy = load !== undefined && load > 0.5 * cores;
  progress(`adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  if (options.installPeers) {
    progress(`installing the peers (PyTorch CPU, numpy, threadpoolctl) into ${peerVenv()}`);
    await installPeers({ python: options.python, onLine: progress });
  }
  progress(`measuring the CPU's GEMM peak (numpy and PyTorch, ${sizes.peakN}x${sizes.peakN})`);
  const reports: PythonReport[] = [];
  for (const python of pythonCandidates(options.python)) {
    const r = await pythonReport(python, sizes.peakN);
    if (r && !reports.some((x) => x.python === r.python)) reports.push(r);
  }
  const peak = yardstick(reports);
  const gpuPeak = gpuYardstick(reports);
  const peer = strongestTorch(reports);
  // On a GPU the peer runs the step on CUDA where its PyTorch sees a CUDA device: the peer a GPU
  // user would compare with. On a software adapter it runs on the CPU, as ours does.
  const peerDevice = hardware && peer?.torch?.cuda ? "cuda" : "cpu";
  const peerName = (p: { version: string; threads: number; device: string }) =>
    `PyTorch ${p.version}, ${
      peerDevice === "cuda" ? `CUDA on ${p.device}` : `${p.threads} threads (CPU)`
    }`;
  const pair: PairedPeer | undefined = peer && {
    tasks: sizes.peers,
    step: (T) => {
      progress(`peer: PyTorch ${peer.torch!.version} ${peerDevice} step at T=${T} B=${sizes.B}`);
      return torchStep(peer.python, { tasks: T, batch: sizes.B, device: peerDevice });
    },
    name: peerName,
  };
  const fewShotPair: FewShotPeer | undefined = peer && {
    step: (d) => {
      progress(
        `peer: PyTorch ${peer.torch!.version} ${peerDevice} few-shot step at T=${d.tasks} ` +
          `B=${d.batch}`,
      );
      return torchDescribedStep(peer.python, d, { device: peerDevice });
    },
    name: peerName,
  };
  const steps = { tasks: sizes.tasks, B: sizes.B, focus: sizes.focus };
  const rows = [
    ...(await matmulRows(gpu, sizes.matmul, sizes.heads, progress)),
    ...(await convRows(gpu, sizes.conv, progress)),
    ...(await stepRows(gpu, steps, progress, pair)),
    ...(await fewShotStepRows(gpu, sizes.fewShot, { progress, pair: fewShotPair })),
    ...(await memoryRows(gpu, { tasks: sizes.memory, B: sizes.B }, progress)),
  ];
  if (options.adapt !== false) {
    rows.push(...(await adaptRows(gpu, { ...sizes.adapt, run: options.adaptRun, progress })));
  }
  const peers: BenchRow[] = [];
  for (const T of sizes.peers) {
    if (options.tfjs !== false) {
      progress(`peer: TensorFlow.js WebGPU step at T=${T} B=${sizes.B}`);
      const p = await tfjsStep(T, sizes.B);
      if (p) {
        peers.push({
          group: "peer",
          name: `seed_cnn T=${T} B=${sizes.B} ${p.detail} (same adapter)`,
          seconds: (T * sizes.B) / p.imagesPerSecond,
          imagesPerSecond: p.imagesPerSecond,
        });
      }
    }
  }
  rows.push(...peers);
  progress("writing the report");
  const machine = await cpuName();
  const find = (name: string) => rows.find((r) => r.name === name);
  const B = sizes.B;
  const loopRatio = (t: number) => {
    const b = find(`seed_cnn T=${t} B=${B} batched`);
    const l = find(`seed_cnn T=${t} B=${B} per-task loop`);
    return b && l ? b.imagesPerSecond! / l.imagesPerSecond! : undefined;
  };
  // A peer paired with ours in time carries its own ratio (the median over rounds).
  const peerRatio = (t: number, name: string) => {
    const p = rows.find((r) =>
      r.group === "peer" && r.name.startsWith(`seed_cnn T=${t} B=${B} ${name}`)
    );
    const ours = find(`seed_cnn T=${t} B=${B} batched`);
    return p?.ratio ?? (p && ours ? ours.imagesPerSecond! / p.imagesPerSecond! : undefined);
  };
  const square = rows.filter((r) => r.group === "matmul" && !r.name.includes("head"));
  const bestMatmul = Math.max(0, ...square.map((r) => r.gflops ?? 0));
  // The conv2d forward figure: per seed_cnn layer its fastest variant, then the slower layer.
  const layers = new Map<string, number>();
  for (const r of rows.filter((r) => r.group === "conv2d" && r.name.includes(": forward "))) {
    const layer = r.name.split(": forward")[0]!;
    layers.set(layer, Math.max(layers.get(layer) ?? 0, r.gflops ?? 0));
  }
  const convForward = layers.size > 0 ? Math.min(...layers.values()) : undefined;
  const ownBest = Math.max(bestMatmul, convForward ?? 0);
  const noYardstick = yardstickProblem(peak, ownBest);
  const ofPeak = (v: number | undefined) =>
    v === undefined || !peak ? undefined : (100 * v) / peak.gflops;
  const memory = rows.filter((r) => r.group === "memory");
  const memoryTargets = memory.map((m): Target => ({
    what: `Peak memory / lower bound, ${m.name.split(" step")[0]}`,
    value: m.ratio,
    goal: 2,
    unit: "x",
    atMost: true,
  }));
  const big = square.filter((r) => r.name.startsWith("4096x4096x4096 "));
  const best4096 = big.length ? Math.max(...big.map((r) => r.gflops ?? 0)) : undefined;
  const step64 = find(`seed_cnn T=64 B=${B} batched`)?.imagesPerSecond;
  const gpuTargets: Target[] = [
    {
      what: "matmul 4096x4096x4096 (fastest variant), % of the GPU's fp32 peak",
      value: best4096 === undefined || !gpuPeak ? undefined : (100 * best4096) / gpuPeak.gflops,
      goal: 40,
      unit: "%",
      noVerdict: !gpuPeak
        ? undefined
        : gpuPeak.gflops < (best4096 ?? 0)
        ? "the measured peak is below our own kernel, so it is no yardstick"
        : undefined,
    },
    { what: `seed_cnn training step at T = 64, B = ${B}`, value: step64, goal: 2e5, unit: "/s" },
    { what: "Batched vs per-task loop at T = 16", value: loopRatio(16), goal: 5, unit: "x" },
    ...memoryTargets,
  ];
  const cpuTargets: Target[] = [
    {
      what: `Ours / PyTorch CPU, seed_cnn step at T = 16, B = ${B}`,
      value: peerRatio(16, "PyTorch"),
      goal: 1,
      unit: "x",
    },
    { what: "Batched vs per-task loop at T = 16", value: loopRatio(16), goal: 5, unit: "x" },
    {
      what: "Best matmul, % of the GEMM peak",
      value: ofPeak(bestMatmul || undefined),
      goal: 25,
      unit: "%",
      noVerdict: noYardstick,
    },
    {
      what: "conv2d forward (slower seed_cnn layer, fastest variant), % of the GEMM peak",
      value: ofPeak(convForward),
      goal: 15,
      unit: "%",
      noVerdict: noYardstick,
    },
    ...memoryTargets,
    {
      what: `Ours / TensorFlow.js at T = 16, B = ${B}`,
      value: peerRatio(16, "TensorFlow.js"),
      goal: 5,
      unit: "x",
    },
  ];
  const targets = hardware ? gpuTargets : cpuTargets;
  const tune = tuneSettings(gpu);
  const summary = [
    `Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}; features: ${
      [...gpu.features].join(", ") || "none"
    }. Machine: ${machine}. Date: ${started}.`,
    load === undefined
      ? ""
      : `Load average at the start: ${load.toFixed(2)} on ${cores} cores${
        busy
          ? ": other work was running, so every timing here is lower than the machine can do (figures contaminated; rerun on a quiet machine)"
          : ""
      }.`,
    `Kernels: ${
      tune.mode === "off"
        ? "built-in defaults (--no-tune)"
        : `tuned per shape class, winners cached in ${tune.path}`
    }.`,
    peak
      ? `GEMM peak of this CPU in the same run: ${
        peak.gflops.toFixed(1)
      } GFLOP/s by ${peak.via}, BLAS as reported: ${peak.blas}${
        peak.optimised ? "" : " (not a known optimised BLAS)"
      }. Also measured: ${
        peak.all.filter((a) => a.via !== peak.via).map((a) => `${a.via} ${a.gflops.toFixed(1)}`)
          .join("; ") || "nothing else"
      }.`
      : "GEMM peak: neither numpy nor PyTorch found, not measured.",
    hardware
      ? gpuPeak
        ? `fp32 GEMM peak of this GPU in the same run (the yardstick of the % column and of the ` +
          `matmul target): ${gpuPeak.gflops.toFixed(0)} GFLOP/s by ${gpuPeak.via} (${
            Object.entries(gpuPeak.bySize).map(([n, g]) => `${n}^3: ${g.toFixed(0)}`).join(", ")
          }).`
        : "fp32 GEMM peak of this GPU: no PyTorch that sees a CUDA device was found, not measured."
      : "",
    peer
      ? `PyTorch peer: ${
        peer.torch!.version
      } (${peer.python}), the newest of the interpreters found; ${
        peerDevice === "cuda"
          ? `the step on CUDA (${peer.torch!.cuda})`
          : `BLAS: ${peer.torch!.blas.join(", ") || "not reported"}`
      }.`
      : "PyTorch not found: no PyTorch ratio (install a current CPU wheel with pip, or Debian's python3-torch).",
    options.tiny
      ? "Tiny sizes (--tiny): this run checks the bench end to end; its figures mean nothing."
      : "",
    ...targets.map((t) =>
      targetLine(options.tiny ? { ...t, noVerdict: t.noVerdict ?? "tiny sizes" } : t, busy)
    ),
    ...sizes.tasks.filter((t) => t !== 16).map((t) => [t, loopRatio(t)] as const)
      .filter(([, r]) => r !== undefined)
      .map(([t, r]) => `Batched vs per-task loop at T = ${t}: ${r!.toFixed(2)}x.`),
    ...(hardware ? [1, 16, 64] : [1, 64]).flatMap((t) =>
      ["PyTorch", "TensorFlow.js"].map((p) => {
        const r = peerRatio(t, p);
        const on = p === "PyTorch" && peerDevice === "cuda" ? " CUDA" : "";
        return r === undefined ? "" : `Ours / ${p}${on} at T = ${t}, B = ${B}: ${r.toFixed(2)}x.`;
      })
    ),
    fewShotLine(rows, sizes.fewShot, {
      cuda: peerDevice === "cuda",
      why: peer ? "the PyTorch peer did not run" : "PyTorch not found",
    }),
  ].filter(Boolean);
  const cache = tune.mode === "off" ? undefined : readTuneCache(tune.path).adapters[gpu.adapterKey];
  const choices = cache
    ? [
      "## Kernel choices on this adapter",
      "",
      "The tuner's cache for this adapter and driver (milliseconds per dispatch of each candidate):",
      "",
      "| kernel | shape class | winner | candidates (ms) | timer |",
      "| --- | --- | --- | --- | --- |",
      ...Object.entries(cache).map(([key, e]) => {
        const [kernel, shape] = key.split(": ");
        const ms = Object.entries(e.ms).map(([v, m]) => `${v} ${m.toFixed(3)}`).join(", ");
        return `| ${kernel} | ${shape} | ${e.winner} | ${ms} | ${e.timer} |`;
      }),
      "",
    ]
    : [];
  await Deno.mkdir(out, { recursive: true });
  const json = {
    started,
    adapter: gpu.description,
    fallback: gpu.isFallback,
    features: [...gpu.features],
    machine,
    load,
    peak,
    gpuPeak,
    python: reports,
    tune: { ...tune, choices: cache ?? {} },
    rows,
  };
  await Deno.writeTextFile(
    join(out, "benchmarks.json"),
    homeRelative(JSON.stringify(json, null, 2)) + "\n",
  );
  const md = [
    "# Benchmarks",
    "",
    "Written by `deno task bench` (median of >= 5 timed repeats after a warm-up; each repeat ends with `onSubmittedWorkDone`). Every figure on this page comes from the run below.",
    "",
    ...summary.map((s) => `- ${s}`),
    "",
    ...whereTimeGoes(rows, sizes.focus, B),
    table(rows, hardware ? gpuPeak?.gflops : peak?.gflops),
    "",
    ...choices,
    ...TRIED,
    "",
  ].join("\n");
  await Deno.writeTextFile(join(out, "benchmarks.md"), homeRelative(md));
  return md;
}

/**
 * The summary line of the few-shot step: ours / PyTorch with both rates in episodes per second,
 * or `why` there is no ratio.
 */
function fewShotLine(
  rows: BenchRow[],
  sizes: FewShotSizes,
  peer: { cuda: boolean; why: string },
): string {
  const label = fewShotLabel(sizes);
  const what = `Ours / PyTorch${peer.cuda ? " CUDA" : ""}, few-shot step ${label}`;
  const ours = rows.find((r) => r.group === "training step" && r.name.startsWith(`${label} (`));
  const theirs = rows.find((r) => r.group === "peer" && r.name.startsWith(`${label} `));
  if (!ours || !theirs) return `${what}: not measured (${peer.why}).`;
  const rate = (r: BenchRow) => (sizes.tasks / r.seconds).toFixed(1);
  return `${what}: ${theirs.ratio!.toFixed(2)}x, paired round by round (medians: ours ${
    rate(ours)
  } episodes/s, PyTorch ${rate(theirs)}).`;
}

/** Prose on where the step's time goes, from this run's breakdown and per-kernel rows. */
function whereTimeGoes(rows: BenchRow[], T: number, B: number): string[] {
  const label = `seed_cnn T=${T} B=${B}`;
  const phases = rows.filter((r) => r.group === "step breakdown" && r.name.startsWith(label));
  const kernels = rows.filter((r) => r.group === "per kernel" && r.name.startsWith(label));
  if (phases.length < 3 || kernels.length === 0) return [];
  const [fwd, withBackward, whole] = phases.map((r) => r.seconds) as [number, number, number];
  const total = kernels.reduce((n, r) => n + r.seconds, 0);
  const conv = kernels.filter((r) => r.name.includes("conv2d:")).reduce((n, r) => n + r.seconds, 0);
  const top = kernels[0]!;
  return [
    "## Where the time goes",
    "",
    `At T = ${T}, B = ${B} the whole step takes ${(whole * 1000).toFixed(1)} ms: the forward ${
      (fwd * 1000).toFixed(1)
    } ms, loss and backward ${((withBackward - fwd) * 1000).toFixed(1)} ms (${
      ((withBackward - fwd) / fwd).toFixed(1)
    }x the forward), the optimiser ${
      ((whole - withBackward) * 1000).toFixed(1)
    } ms. Timed alone, the convolutions take ${
      ((100 * conv) / total).toFixed(0)
    }% of the summed kernel time; the largest single entry is ${
      top.name.slice(label.length + 2)
    } at ${(top.seconds * 1000).toFixed(1)} ms.`,
    "",
  ];
}

/** Flags of `deno task bench`, one per {@linkcode BenchOptions} field. */
export const BENCH_FLAGS: Flag[] = [
  { flag: "quick", key: "quick", kind: "bool", help: "fewer sizes (a few minutes)" },
  {
    flag: "tiny",
    key: "tiny",
    kind: "bool",
    help: "tiny sizes only: checks the run end to end in seconds (figures mean nothing)",
  },
  {
    flag: "out",
    key: "out",
    kind: "string",
    help: "folder of benchmarks.md and benchmarks.json (--out docs: the committed page)",
  },
  { flag: "no-tune", key: "tune", kind: "bool", help: "the built-in kernel defaults, no tuning" },
  {
    flag: "tune-cache",
    key: "tuneCache",
    kind: "string",
    help: "the tuner's cache file (default: the tuner's, SUPERNET_TUNE_CACHE or the user cache)",
  },
  {
    flag: "python",
    key: "python",
    kind: "string",
    help: "Python interpreter to try first for the peers and the GEMM yardstick",
  },
  {
    flag: "install-peers",
    key: "installPeers",
    kind: "bool",
    help: "first install a current PyTorch CPU wheel, numpy and threadpoolctl with pip",
  },
  {
    flag: "no-tfjs",
    key: "tfjs",
    kind: "bool",
    help: "skip the TensorFlow.js peer (it fetches npm packages on first use)",
  },
  { flag: "no-adapt", key: "adapt", kind: "bool", help: "skip the adaptation-speed rows" },
  {
    flag: "adapt-run",
    key: "adaptRun",
    kind: "string",
    help: "a trained run folder whose generator the adaptation rows use (default: a fresh one)",
  },
];

/**
 * Defaults of `deno task bench`: figures go to a run folder, so that a bench run never replaces
 * the committed docs/benchmarks.md unless asked with `--out docs`.
 */
export const BENCH_DEFAULTS = {
  quick: false,
  tiny: false,
  out: "runs/bench",
  tune: true,
  installPeers: false,
  tfjs: true,
  adapt: true,
};

/** The bench's options from its flags' values (by key), over {@linkcode BENCH_DEFAULTS}. */
export function benchOptions(values: Record<string, unknown>): BenchOptions {
  return { ...BENCH_DEFAULTS, ...values };
}

const BENCH_HELP = {
  summary: "kernels, training step, memory, adaptation speed and peers; benchmarks.md in --out",
  flags: [...BENCH_FLAGS, HELP_FLAG],
  defaults: BENCH_DEFAULTS,
};

if (import.meta.main) {
  let options: BenchOptions;
  try {
    const { values, help, positionals } = await parseFlags(Deno.args, {
      flags: BENCH_FLAGS,
      common: [HELP_FLAG],
    });
    if (help) {
      console.log(usage("bench", BENCH_HELP));
      Deno.exit(0);
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    options = benchOptions(values);
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : e}`);
    console.error("usage: deno task bench [flags]; 'deno task bench --help' lists them");
    Deno.exit(2);
  }
  const t0 = performance.now();
  try {
    const md = await bench({
      ...options,
      onProgress: (line) =>
        console.error(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`),
    });
    console.log(md);
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}

/**
 * `text` with the user's home folder written as ~, so that committed reports name the cache and
 * interpreters as every user would find them, not by one machine's absolute paths.
 */
export function homeRelative(text: string): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  return home && home.length > 1 ? text.replaceAll(home + "/", "~/") : text;
}
