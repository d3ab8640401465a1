/**
 * Adaptation speed for `deno task bench`: learning a new task optimises its z alone, and N tasks
 * adapt at once as one batched program of N slots (SlotSampler + StepProgram, as `deno task adapt
 * --task all-heldout` runs them). Rows: images/s of N = 1, 8, 64 tasks at once, their speed-up
 * over N single adaptations, and the time one held-out task takes to come within 1 point of the
 * accuracy it ends at.
 *
 * The generator is a trained run's (`--adapt-run`) or, without one, a freshly initialised
 * SuperNet on the embedded MNIST tasks: the speed rows are the same either way; the time to
 * accuracy only means something for a trained generator, and the row says which it was.
 *
 * @module
 */
import { loadDataset } from "./data/dataset.ts";
import type { Dataset } from "./data/split.ts";
import { ImageStore, type Slot, SlotSampler } from "./data/sampler.ts";
import { makeFamily, taskExamples, type TaskFamily } from "./data/tasks.ts";
import { Evaluator, StepProgram } from "./engine.ts";
import type { Gpu } from "./gpu/device.ts";
import { sync } from "./gpu/kernel.ts";
import { Arena, write } from "./gpu/tensor.ts";
import { wallSeconds } from "./gpu/timing.ts";
import { tunePending } from "./gpu/tune.ts";
import { SuperNet, superNetConfig } from "./model/supernet.ts";
import { optimizerConfig, ParamGroup } from "./optim.ts";
import { loadRun, runDataset } from "./run.ts";

/** A row of the benchmark table (the shape of `BenchRow` in src/bench.ts). */
export interface AdaptRow {
  group: string;
  name: string;
  seconds: number;
  imagesPerSecond?: number;
  ratio?: number;
}

/** Options of {@linkcode adaptRows}. */
export interface AdaptBenchOptions {
  /** Task counts adapted at once (e.g. [1, 8, 64]). */
  slots: number[];
  /** Steps of the time-to-accuracy run (evaluated every tenth of them). */
  steps: number;
  /** Images per task per step. */
  batch: number;
  /** A trained run folder; default: a freshly initialised SuperNet on MNIST. */
  run?: string;
  /** Adam's learning rate for z (default 0.01). */
  lr?: number;
  /** Progress lines. */
  progress?: (line: string) => void;
}

interface Setup {
  net: SuperNet;
  dataset: Dataset;
  family: TaskFamily;
  /** The starting z (mean of the trained z, or the first row of a fresh table). */
  start: Float32Array;
  what: string;
}

async function setup(gpu: Gpu, run: string | undefined): Promise<Setup> {
  if (run) {
    const loaded = await loadRun(gpu, run);
    const dataset = await runDataset(loaded.state, loaded.options, {});
    const d = loaded.state.model.generator.zDim;
    const trained = loaded.state.family.train;
    const start = new Float32Array(d);
    for (const t of trained) {
      for (let i = 0; i < d; i++) start[i]! += loaded.table[t * d + i]! / trained.length;
    }
    return {
      net: loaded.net,
      dataset,
      family: loaded.state.family,
      start,
      what: `trained run ${run}`,
    };
  }
  const dataset = await loadDataset("mnist");
  const family = makeFamily("one_vs_anchor", dataset.classNames, { holdoutLast: 2 });
  const net = SuperNet.create(
    gpu,
    superNetConfig({ inputShape: dataset.shape, tasks: family.tasks.length }),
  );
  return {
    net,
    dataset,
    family,
    start: new Float32Array(net.config.generator.zDim),
    what: "a freshly initialised SuperNet on MNIST (no --adapt-run)",
  };
}

/** The adaptation-speed rows (see the module comment). */
export async function adaptRows(gpu: Gpu, options: AdaptBenchOptions): Promise<AdaptRow[]> {
  const progress = options.progress ?? (() => {});
  const s = await setup(gpu, options.run);
  const heldOut = s.family.heldOut.length > 0 ? s.family.heldOut : [0];
  const trainStore = new ImageStore(gpu, s.dataset.train, { shape: s.dataset.shape });
  const testStore = new ImageStore(gpu, s.dataset.test, { shape: s.dataset.shape });
  const rows: AdaptRow[] = [];
  const d = s.start.length;
  /** A batched adaptation of N slots (held-out tasks in turn), ready to step. */
  const prepare = (N: number) => {
    const tasks = Array.from({ length: N }, (_, i) => heldOut[i % heldOut.length]!);
    const table = new Arena(gpu);
    table.add("z", [N, d]);
    table.allocate();
    const rowsOfZ = new Float32Array(N * d);
    for (let i = 0; i < N; i++) rowsOfZ.set(s.start, i * d);
    write(gpu, table.flat, rowsOfZ);
    const group = new ParamGroup(gpu, table, {
      optimizer: optimizerConfig("adam", options.lr ?? 0.01),
      schedule: { lr: options.lr ?? 0.01, kind: "constant", warmup: 0, steps: options.steps },
    });
    const slots = tasks.map((t, i): Slot => ({
      task: s.family.tasks[t]!,
      examples: taskExamples(s.family.tasks[t]!, s.dataset.train),
      seed: i,
    }));
    const sampler = new SlotSampler(gpu, s.dataset, {
      slots,
      batch: options.batch,
      store: trainStore,
      balanced: true,
    });
    const program = new StepProgram(gpu, {
      source: sampler,
      forward: (tape, inputs) =>
        s.net.forward(tape, { ...inputs, table, grads: { z: group.grads } }),
      groups: [group],
      gradScale: N,
    });
    return {
      tasks,
      table,
      program,
      destroy: () => {
        program.destroy();
        sampler.destroy();
        group.destroy();
        table.destroy();
      },
    };
  };
  try {
    let single: number | undefined;
    for (const N of options.slots) {
      progress(`adaptation: ${N} task${N > 1 ? "s" : ""} at once, B=${options.batch}`);
      const a = prepare(N);
      await tunePending(gpu);
      // Steps as `adapt` runs them: many submitted between waits on a GPU (src/gpu/timing.ts).
      const seconds = await wallSeconds(gpu, (i) => a.program.run(i + 1));
      if (N === 1) single = seconds;
      rows.push({
        group: "adaptation",
        name: `${N} task${N > 1 ? "s" : ""} at once, B=${options.batch}: step${
          single !== undefined && N > 1 ? ", speed-up over N single adaptations" : ""
        }`,
        seconds,
        imagesPerSecond: (N * options.batch) / seconds,
        ratio: single !== undefined && N > 1 ? (N * single) / seconds : undefined,
      });
      a.destroy();
    }
    rows.push(await timeToAccuracy(gpu, s, prepare(1), { ...options, testStore, progress }));
  } finally {
    trainStore.destroy();
    testStore.destroy();
    s.net.destroy();
  }
  return rows;
}

/**
 * Adapts one held-out task for `steps` steps, scoring its test images every tenth of them (not
 * timed); the time is the step time until the first score within 1 point of the last one.
 */
async function timeToAccuracy(
  gpu: Gpu,
  s: Setup,
  a: { tasks: number[]; table: Arena; program: StepProgram; destroy: () => void },
  options: AdaptBenchOptions & { testStore: ImageStore; progress: (line: string) => void },
): Promise<AdaptRow> {
  const task = a.tasks[0]!;
  options.progress(`adaptation: time to accuracy of task ${s.family.tasks[task]!.name}`);
  const virtual: TaskFamily = { ...s.family, tasks: [s.family.tasks[task]!] };
  const evaluator = new Evaluator(gpu, {
    dataset: s.dataset,
    family: virtual,
    tasks: [0],
    forward: (tape, inputs) => s.net.forward(tape, { ...inputs, table: a.table }),
    batch: 256,
    tasksPerChunk: 1,
    store: options.testStore,
    split: "test",
  });
  const every = Math.max(1, Math.round(options.steps / 10));
  const curve: { seconds: number; accuracy: number }[] = [];
  let clock = 0;
  try {
    curve.push({ seconds: 0, accuracy: (await evaluator.evaluate())[0]!.accuracy });
    // The steps between two scorings run without a wait, as `adapt` runs them; scoring is not
    // counted.
    let t0 = performance.now();
    for (let step = 1; step <= options.steps; step++) {
      a.program.run(step);
      if (step % every === 0 || step === options.steps) {
        await sync(gpu);
        clock += (performance.now() - t0) / 1000;
        curve.push({ seconds: clock, accuracy: (await evaluator.evaluate())[0]!.accuracy });
        t0 = performance.now();
      }
    }
  } finally {
    evaluator.destroy();
    a.destroy();
  }
  const final = curve[curve.length - 1]!.accuracy;
  const reached = curve.find((p) => Math.abs(p.accuracy - final) <= 0.01)!;
  return {
    group: "adaptation",
    name: `1 held-out task (${s.family.tasks[task]!.name}) to within 1 point of its final ${
      (100 * final).toFixed(1)
    }% (after ${options.steps} steps, B=${options.batch}; ${s.what})`,
    seconds: reached.seconds,
  };
}
