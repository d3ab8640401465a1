/**
 * `experiment`: the seed's two experiments end to end, with the controls and ablations that test
 * its claims, measured on held-out test images. Writes `results.json` into the output folder;
 * `report` turns it into Markdown with SVG plots.
 *
 * exp1: `one_vs_anchor` (class i vs the last class); the held-out task is learned by z alone and
 * compared with training the whole network. exp2: `pairs_reversed`; the held-out task is the
 * reversed twin of a training pair, so one general network cannot solve both and z must flip it.
 *
 * @module
 */
import { join } from "node:path";
import {
  adapt,
  ADAPT_DEFAULTS,
  type AdaptOptions,
  type Method,
  type MethodResult,
} from "./adapt.ts";
import type { Gpu } from "./gpu/device.ts";
import { evaluateRun, scoreTaskWithZs } from "./evaluate.ts";
import { initTaskVectors } from "./model/supernet.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import { writeAtomic } from "./safetensors.ts";
import { MODEL_FILE, type RunState, train, TRAIN_DEFAULTS, type TrainOptions } from "./train.ts";

/** Experiments `experiment` runs. */
export const EXPERIMENTS = ["exp1", "exp2"] as const;
/** Sizes of an experiment. */
export const PROFILES = ["smoke", "quick", "long", "full"] as const;

/** Options of `experiment` (the CLI maps its flags 1:1 onto these). */
export interface ExperimentOptions {
  /** exp1 (one_vs_anchor) or exp2 (pairs_reversed). */
  name: typeof EXPERIMENTS[number];
  /** Dataset. */
  dataset: string;
  /** Folder of dataset files. */
  dataDir?: string;
  /** Check dataset files. */
  verify: boolean;
  /** Task family (default: the experiment's own). */
  family?: string;
  /**
   * smoke (seconds, for tests), quick (2 CPU cores, under 15 minutes on MNIST), long (about 13
   * minutes there without ablations) or full (the seed's scale, for a GPU).
   */
  profile: typeof PROFILES[number];
  /** Number of held-out tasks (the last K); results are mean +- std over them. */
  holdout: number;
  /** Target network. */
  target: string;
  /** Images per class of the shots sweep (0 = all). */
  shots: number[];
  /** Run the ablations (linear output; one hidden layer). */
  ablations: boolean;
  /** Seed. */
  seed: number;
  /** Output folder. */
  out: string;
  /** Training options applied on top of the profile (steps, lr, generator choices, ...). */
  train?: Partial<TrainOptions>;
  /** Adaptation options applied on top of the profile (steps, learning rates, init, ...). */
  adapt?: Partial<AdaptOptions>;
}

/** Defaults of `experiment`. */
export const EXPERIMENT_DEFAULTS: ExperimentOptions = {
  name: "exp1",
  dataset: "mnist",
  verify: true,
  profile: "quick",
  holdout: 1,
  target: "seed_cnn",
  shots: [1, 5, 20, 100, 0],
  ablations: true,
  seed: 1,
  out: "runs/experiment",
};

/** Step budgets of a profile. */
interface Profile {
  train: Pick<TrainOptions, "steps" | "tasksPerStep" | "batch" | "evalEvery">;
  adapt: Pick<AdaptOptions, "steps" | "batch" | "evalEvery">;
  sweepMethods: Method[];
}

const PROFILE_SETTINGS: Record<typeof PROFILES[number], Profile> = {
  // Seconds: proves the pipeline end to end in tests; its numbers mean nothing.
  smoke: {
    train: { steps: 6, tasksPerStep: 2, batch: 8, evalEvery: 0 },
    adapt: { steps: 4, batch: 8, evalEvery: 2 },
    sweepMethods: ["z", "full"],
  },
  // Trimmed for 2 CPU cores with the software driver: 300 training steps of 8 tasks x 32 images,
  // 150 adaptation steps, the shots sweep for z and full only.
  quick: {
    train: { steps: 300, tasksPerStep: 8, batch: 32, evalEvery: 0 },
    adapt: { steps: 150, batch: 64, evalEvery: 25 },
    sweepMethods: ["z", "full"],
  },
  // About 13 minutes per experiment (measured 12.4-13.0) on 2 CPU cores without ablations: 2000 training steps,
  // 400 adaptation steps.
  long: {
    train: { steps: 2000, tasksPerStep: 8, batch: 32, evalEvery: 500 },
    adapt: { steps: 400, batch: 64, evalEvery: 50 },
    sweepMethods: ["z", "full"],
  },
  // The seed's scale: long training over many tasks per step; every method in the sweep.
  full: {
    train: { steps: 5000, tasksPerStep: 16, batch: 64, evalEvery: 500 },
    adapt: { steps: 1000, batch: 64, evalEvery: 50 },
    sweepMethods: ["z", "full", "finetune"],
  },
};

/** Results of one held-out task. */
export interface HeldOutResult {
  /** Task index. */
  task: number;
  /** Task name. */
  name: string;
  /** Every method on all training images of the task. */
  methods: MethodResult[];
  /** Accuracy of the task with other task vectors and no training. */
  controls: {
    meanZ: number;
    randomZ: number;
    bestTrainingZ: number;
    meanOverTrainingZ: number;
    /** With the z of each training task, by task index. */
    perTrainingZ: { task: number; accuracy: number }[];
    /** With the z of the trained task of the same classes with labels reversed, if one exists. */
    reversedTwinZ?: number;
  };
  /** Accuracy by images per class (0 = all) and method. */
  shots: { shots: number; method: Method; accuracy: number; loss: number }[];
}

/** One ablation: a generator variant trained and adapted like the base one. */
export interface AblationResult {
  /** What changed. */
  name: string;
  /** Mean test accuracy over the training tasks. */
  trainedAccuracy: number;
  /** Held-out accuracy with the mean z. */
  zeroShot: number;
  /** Held-out accuracy after z-only adaptation. */
  zOnly: number;
  /** Training wall time. */
  trainSeconds: number;
}

/** Everything `report` needs. */
export interface ExperimentResults {
  /** The options, resolved. */
  options: ExperimentOptions;
  /** The command that reproduces this. */
  command: string;
  /** Adapter description. */
  adapter: string;
  /** Dataset identity. */
  dataset: string;
  /** Task family name. */
  family: string;
  /** Training tasks and held-out tasks. */
  taskCounts: { train: number; heldOut: number };
  /** Mean test accuracy of the training tasks after training. */
  trainedAccuracy: number;
  /** Training wall time. */
  trainSeconds: number;
  /** Per held-out task. */
  heldOut: HeldOutResult[];
  /** Generator variants. */
  ablations: AblationResult[];
  /** Total wall time. */
  seconds: number;
}

/** Progress of an experiment, as plain sentences. */
export type ExperimentEvent = { kind: "phase"; text: string };

/** Runs the experiment and writes `results.json` into `options.out`. */
export async function runExperiment(
  gpu: Gpu,
  options: ExperimentOptions,
  hooks: { onEvent?: (e: ExperimentEvent) => void; command?: string } = {},
): Promise<ExperimentResults> {
  const started = performance.now();
  const profile = PROFILE_SETTINGS[options.profile];
  const family = options.family ?? (options.name === "exp1" ? "one_vs_anchor" : "pairs_reversed");
  const say = (text: string) => hooks.onEvent?.({ kind: "phase", text });
  await Deno.mkdir(options.out, { recursive: true });
  const baseTrain: TrainOptions = {
    ...TRAIN_DEFAULTS,
    ...profile.train,
    ...options.train,
    dataset: options.dataset,
    dataDir: options.dataDir,
    verify: options.verify,
    family,
    holdoutLast: options.holdout,
    target: options.target,
    seed: options.seed,
    evalTasks: 0,
    out: join(options.out, "train"),
  };
  const trainRun = async (name: string, changes: Partial<TrainOptions>) => {
    const opts = { ...baseTrain, ...changes, out: join(options.out, name) };
    await Deno.remove(opts.out, { recursive: true }).catch(() => {});
    say(`training ${name} (${opts.steps} steps of ${opts.tasksPerStep} tasks x ${opts.batch})`);
    const result = await train(gpu, opts);
    return { dir: opts.out, result };
  };
  const adaptBase: AdaptOptions = {
    ...ADAPT_DEFAULTS,
    ...profile.adapt,
    ...options.adapt,
    dataDir: options.dataDir,
    verify: options.verify,
    seed: options.seed,
  };

  const base = await trainRun("train", {});
  const { info } = await loadCheckpoint<TrainOptions>(base.dir, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const evaluated = await evaluateRun(gpu, {
    run: base.dir,
    dataDir: options.dataDir,
    verify: options.verify,
  });
  const heldOut: HeldOutResult[] = [];
  for (const task of state.family.heldOut) {
    const name = state.family.tasks[task]!.name;
    say(`held-out task '${name}': methods`);
    const main = await adapt(gpu, {
      ...adaptBase,
      run: base.dir,
      task: String(task),
      methods: ["zero-shot", "z", "full", "finetune", "z-untrained"],
      out: join(options.out, `adapt_${task}`),
    });
    say(`held-out task '${name}': controls`);
    const controls = await controls_(gpu, base.dir, state, task, options);
    const shots: HeldOutResult["shots"] = [];
    for (const s of options.shots) {
      say(`held-out task '${name}': ${s === 0 ? "all" : s} image(s) per class`);
      const r = s === 0 ? main : await adapt(gpu, {
        ...adaptBase,
        run: base.dir,
        task: String(task),
        shots: s,
        methods: profile.sweepMethods,
        out: join(options.out, `adapt_${task}_shots_${s}`),
      });
      for (const m of r.results) {
        if (!profile.sweepMethods.includes(m.method)) continue;
        shots.push({ shots: s, method: m.method, accuracy: m.accuracy, loss: m.loss });
      }
    }
    heldOut.push({ task, name, methods: main.results, controls, shots });
  }

  const ablations: AblationResult[] = [];
  if (options.ablations) {
    const variants: [string, Partial<TrainOptions>][] = [
      ["linear output", { output: "linear" }],
      ["one hidden layer (100)", { hidden: [100] }],
    ];
    for (const [label, changes] of variants) {
      const dirName = `ablation_${label.split(" ")[0]}`;
      const run = await trainRun(dirName, changes);
      const ev = await evaluateRun(gpu, {
        run: run.dir,
        dataDir: options.dataDir,
        verify: options.verify,
      });
      const zOnly: number[] = [];
      const zero: number[] = [];
      for (const task of state.family.heldOut) {
        const r = await adapt(gpu, {
          ...adaptBase,
          run: run.dir,
          task: String(task),
          methods: ["zero-shot", "z"],
          out: join(run.dir, "adapt"),
        });
        zero.push(r.results[0]!.accuracy);
        zOnly.push(r.results[1]!.accuracy);
      }
      ablations.push({
        name: label,
        trainedAccuracy: ev.trainedAccuracy,
        zeroShot: average(zero),
        zOnly: average(zOnly),
        trainSeconds: run.result.seconds,
      });
    }
  }

  const results: ExperimentResults = {
    options,
    command: hooks.command ?? "",
    adapter: `${gpu.description}${gpu.isFallback ? " (software)" : ""}`,
    dataset: state.dataset.source,
    family,
    taskCounts: { train: state.family.train.length, heldOut: state.family.heldOut.length },
    trainedAccuracy: evaluated.trainedAccuracy,
    trainSeconds: base.result.seconds,
    heldOut,
    ablations,
    seconds: (performance.now() - started) / 1000,
  };
  await writeAtomic(join(options.out, "results.json"), JSON.stringify(results, null, 2) + "\n");
  return results;
}

async function controls_(
  gpu: Gpu,
  run: string,
  state: RunState,
  task: number,
  options: ExperimentOptions,
): Promise<HeldOutResult["controls"]> {
  const { tensors } = await loadCheckpoint<TrainOptions>(run, [MODEL_FILE]);
  const table = tensors[MODEL_FILE]!.get("task.z")!.data as Float32Array;
  const d = state.model.generator.zDim;
  const trainZs = state.family.train.map((t) => table.slice(t * d, (t + 1) * d));
  const meanZ = new Float32Array(d);
  for (const z of trainZs) z.forEach((v, k) => meanZ[k]! += v / trainZs.length);
  const randomZ = initTaskVectors(1, d, { init: "gaussian", seed: options.seed + 7 });
  const scores = await scoreTaskWithZs(gpu, {
    run,
    task,
    zs: [meanZ, randomZ, ...trainZs],
    dataDir: options.dataDir,
    verify: options.verify,
  });
  const perTrain = scores.slice(2).map((s) => s.accuracy);
  const held = state.family.tasks[task]!;
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((c, i) => c === b[i]);
  const twin = state.family.train.findIndex((t) => {
    const other = state.family.tasks[t]!;
    return same(other.negative, held.positive) && same(other.positive, held.negative);
  });
  return {
    meanZ: scores[0]!.accuracy,
    randomZ: scores[1]!.accuracy,
    bestTrainingZ: Math.max(...perTrain),
    meanOverTrainingZ: average(perTrain),
    perTrainingZ: state.family.train.map((t, i) => ({ task: t, accuracy: perTrain[i]! })),
    ...(twin >= 0 ? { reversedTwinZ: perTrain[twin]! } : {}),
  };
}

/** Mean of numbers (0 for none). */
export function average(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/** Population standard deviation (0 for fewer than two). */
export function stdDev(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = average(xs);
  return Math.sqrt(average(xs.map((x) => (x - m) ** 2)));
}
