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
  type AdaptResult,
  fullAugment,
  type Method,
  type MethodResult,
  type RankedZ,
} from "./adapt/mod.ts";
import type { Gpu } from "./gpu/device.ts";
import { evaluateRun, scoreTaskWithZs } from "./evaluate.ts";
import { loadDataset } from "./data/dataset.ts";
import { makeFamily, type TaskFamily } from "./data/tasks.ts";
import type { Dataset } from "./data/split.ts";
import { describeCommit } from "./commit.ts";
import { chooseRecipe, RECIPE_FILE, type RecipeChoice, recipeOptions } from "./adapt/recipe.ts";
import { initTaskVectors } from "./model/supernet.ts";
import { mixSeed } from "./random.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import { writeAtomic } from "./safetensors.ts";
import { sampleStd } from "./stats.ts";
import {
  defaultValidationTasks,
  MODEL_FILE,
  type RunState,
  train,
  TRAIN_DEFAULTS,
  type TrainOptions,
} from "./train.ts";

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
   * smoke (seconds, for tests), quick (2 CPU cores, 20-27 minutes without ablations), long (34-103
   * minutes there without ablations) or full (the seed's scale, for a GPU).
   */
  profile: typeof PROFILES[number];
  /**
   * Number of held-out tasks (the last K); results are mean +- std over them. Default
   * ({@linkcode defaultHoldoutLast}): 3, fewer where the family would keep under 2 training tasks.
   */
  holdoutLast?: number;
  /** Target network. */
  target: string;
  /** Images per class of the shots sweep (0 = all). */
  shots: number[];
  /** Few-shot subsets drawn per shot count (each row is their mean). */
  subsets: number;
  /** Run the ablations (linear output; one hidden layer). */
  ablations: boolean;
  /** Seed. */
  seed: number;
  /** Output folder (the CLI's default: runs/<name>, e.g. runs/exp1). */
  out: string;
  /**
   * Keep what an earlier run of the same options left in `out`: its training (finished, or
   * continued from its last checkpoint) and every adaptation phase that finished with the same
   * options; only the rest runs. A training run of other options there is an error, not replaced.
   * Code changes in between are not detected: after one, start afresh.
   */
  resume?: boolean;
  /**
   * Only re-measure the whole network (`full`) on the held-out tasks, without training the
   * generator: writes baseline.json (src/baseline.ts) instead of results.json.
   */
  baseline?: boolean;
  /** Training options applied on top of the profile (steps, lr, generator choices, ...). */
  train?: Partial<TrainOptions>;
  /** Adaptation options applied on top of the profile (steps, learning rates, init, ...). */
  adapt?: Partial<AdaptOptions>;
}

/**
 * Defaults of `experiment`; the output folder has none (the CLI's is runs/<name>), and the
 * number of held-out tasks depends on the family ({@linkcode defaultHoldoutLast}).
 */
export const EXPERIMENT_DEFAULTS: Omit<ExperimentOptions, "out"> = {
  name: "exp1",
  dataset: "mnist",
  verify: true,
  profile: "quick",
  target: "seed_cnn",
  shots: [1, 5, 0],
  subsets: 5,
  ablations: true,
  seed: 1,
};

/** Held-out tasks of an experiment not told how many, where the family has enough tasks. */
export const DEFAULT_HOLDOUT_LAST = 3;

/**
 * Held-out tasks of an experiment not told how many: {@linkcode DEFAULT_HOLDOUT_LAST}, or the
 * most below it that leaves the family at least 2 training tasks (1 at the least), so that the
 * verdict rests on more than one task wherever the family allows it.
 */
export function defaultHoldoutLast(family: string, classNames: readonly string[]): number {
  for (let k = DEFAULT_HOLDOUT_LAST; k > 1; k--) {
    if (trainingTaskCount(family, classNames, k) >= 2) return k;
  }
  return 1;
}

/** Training tasks of `family` with the last `holdoutLast` held out (0 where that is invalid). */
function trainingTaskCount(
  family: string,
  classNames: readonly string[],
  holdoutLast: number,
): number {
  try {
    return makeFamily(family, classNames, { holdoutLast }).train.length;
  } catch (e) {
    if (e instanceof RangeError) return 0;
    throw e;
  }
}

/** Step budgets of a profile. */
export interface Profile {
  train: Required<Pick<TrainOptions, "steps" | "tasksPerStep" | "batch" | "evalEvery">>;
  adapt: Pick<AdaptOptions, "steps" | "batch" | "evalEvery"> & Partial<AdaptOptions>;
  sweepMethods: Method[];
}

const PROFILE_SETTINGS: Record<typeof PROFILES[number], Profile> = {
  // Seconds: proves the pipeline end to end in tests; its numbers mean nothing.
  smoke: {
    train: { steps: 6, tasksPerStep: 2, batch: 8, evalEvery: 0 },
    // The whole network's budget is the step cap, with one weight decay (tests' time).
    adapt: { steps: 4, batch: 8, evalEvery: 2, fullEpochs: 0, fullWeightDecay: [0] },
    sweepMethods: ["z", "full"],
  },
  // Trimmed for 2 CPU cores with the software driver: 300 training steps of 8 tasks x 32 images,
  // 150 adaptation steps; the shots sweep for z, head, full and finetune.
  quick: {
    train: { steps: 300, tasksPerStep: 8, batch: 32, evalEvery: 0 },
    adapt: { steps: 150, batch: 64, evalEvery: 25 },
    sweepMethods: ["z", "head", "full", "finetune"],
  },
  // 34-103 minutes per experiment on 2 CPU cores without ablations or few-shot rows (results.json's
  // seconds, docs/results): 2000 training steps,
  // 400 adaptation steps.
  long: {
    train: { steps: 2000, tasksPerStep: 8, batch: 32, evalEvery: 500 },
    adapt: { steps: 400, batch: 64, evalEvery: 50 },
    sweepMethods: ["z", "head", "full", "finetune"],
  },
  // The seed's scale: long training over many tasks per step; every method in the sweep.
  full: {
    train: { steps: 5000, tasksPerStep: 16, batch: 64, evalEvery: 500 },
    adapt: { steps: 1000, batch: 64, evalEvery: 50 },
    sweepMethods: ["z", "head", "full", "finetune"],
  },
};

/** The adaptation batch of an experiment's options: its own, or its profile's. */
export function adaptBatchOf(options: Pick<ExperimentOptions, "profile" | "adapt">): number {
  return options.adapt?.batch ?? PROFILE_SETTINGS[options.profile].adapt.batch;
}

/** The few-shot rows' control: the best-fitting trained z on the images learned from, not adapted. */
export const TRAINED_Z = "trained z, not adapted";

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
    /** Best training task's z chosen by its test accuracy: an oracle, not a method. */
    bestTrainingZ: number;
    /** The training task's z with the lowest loss on the held-out task's training images. */
    bestTrainingZFair: number;
    meanOverTrainingZ: number;
    /** With the z of each training task, by task index. */
    perTrainingZ: { task: number; accuracy: number }[];
    /** With the z of the trained task of the same classes with labels reversed, if one exists. */
    reversedTwinZ?: number;
  };
  /**
   * Accuracy by images per class (0 = all) and method: mean and sample std over the subsets.
   * {@link TRAINED_Z} is the control: the trained z with the lowest loss on the images learned
   * from, not adapted (no loss recorded).
   */
  shots: {
    shots: number;
    method: Method | typeof TRAINED_Z;
    accuracy: number;
    loss: number;
    /** Sample std over the subsets (0 for one; population std in files from before `values`). */
    std: number;
    subsets: number;
    /**
     * Accuracy of each subset, in subset order (subset k of every method saw the same images);
     * absent in files written before it was added.
     */
    values?: number[];
  }[];
}

/** One ablation: one change to the method, trained and adapted like the base one. */
export interface AblationResult {
  /** What changed. */
  name: string;
  /** Mean test accuracy over the training tasks. */
  trainedAccuracy: number;
  /** Held-out accuracy with the mean z. */
  zeroShot: number;
  /** Held-out accuracy after z-only adaptation (mean over held-out tasks). */
  zOnly: number;
  /** Per held-out task. */
  zOnlyPerTask: number[];
  /** Training wall time (0 when the base run was reused). */
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
  /**
   * Fraction of training images the generator's training kept out, from which the held-out
   * tasks' validation slices came (0 or absent: slices carved at random from seen images).
   */
  reserve?: number;
  /**
   * The whole network's budget (runs from before it was recorded trained `full` for the shared
   * step cap, without weight decay or augmentation): up to the larger of the step cap and
   * `epochs` epochs with early stopping, its weight decays (chosen with the learning rate on the
   * validation slice) and its augmentation.
   */
  fullBudget?: { epochs: number; weightDecays: number[]; augment: boolean; flip: boolean };
  /**
   * `git describe --always --dirty` when the run started (absent in runs from before it was
   * recorded); "-dirty" means the working tree had uncommitted changes.
   */
  commit?: string;
  /** Wall time of each adaptation phase in seconds, by its label (phases kept by --resume: absent). */
  phaseSeconds?: Record<string, number>;
  /** Per held-out task. */
  heldOut: HeldOutResult[];
  /** Generator variants. */
  ablations: AblationResult[];
  /**
   * The adaptation recipe chosen on validation tasks (runs with some; src/adapt/recipe.ts): what
   * it set, its validation numbers beside the built-in defaults', and z on each held-out task
   * with the built-in defaults instead, for comparison.
   */
  recipe?: {
    chosen: RecipeChoice["chosen"];
    validationTasks: number[];
    validation: Pick<RecipeChoice, "defaults" | "seedRecipe" | "zeroShot"> & {
      chosen: { accuracy: number; loss: number };
    };
    seconds: number;
    builtInDefaults: { task: number; accuracy: number; loss: number }[];
  };
  /** Total wall time. */
  seconds: number;
}

/** Progress of an experiment, as plain sentences. */
export type ExperimentEvent = { kind: "phase"; text: string };

/** An experiment that cannot go on: one line naming the folder and what to do. */
export class ExperimentError extends Error {
  /** One line naming the folder, the problem and what to do. */
  constructor(message: string) {
    super(message);
    this.name = "ExperimentError";
  }
}

/** The keys whose values differ between two option records (absent and undefined are equal). */
function differingOptions(
  a: Record<string, unknown>,
  b: Record<string, unknown>,
  ignore: readonly string[] = [],
): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) =>
    !ignore.includes(k) && JSON.stringify(a[k]) !== JSON.stringify(b[k])
  )
    .sort();
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new ExperimentError(
      `${path} is not readable JSON (${(e as Error).message}); delete it or drop --resume`,
    );
  }
}

/**
 * The training run an earlier experiment left in `opts.out`, when resuming: undefined when there
 * is none; an ExperimentError when it was trained with other options.
 */
async function keptTraining(
  opts: TrainOptions,
): Promise<{ step: number; seconds: number } | undefined> {
  const found = await Deno.stat(join(opts.out, "checkpoint.json")).then(() => true, () => false);
  if (!found) return undefined;
  const { info } = await loadCheckpoint<TrainOptions>(opts.out, []);
  const saved = info.options as unknown as Record<string, unknown>;
  const wanted = opts as unknown as Record<string, unknown>;
  // How often a run saves or logs does not change what it learns.
  const differ = differingOptions(saved, wanted, ["out", "resume", "saveEvery", "logEvery"]);
  if (differ.length > 0) {
    const shown = differ.slice(0, 3).map((k) =>
      `${k} ${JSON.stringify(saved[k])}, not ${JSON.stringify(wanted[k])}`
    );
    throw new ExperimentError(
      `${opts.out} holds a training run of other options (${shown.join("; ")}${
        differ.length > 3 ? `; ${differ.length - 3} more` : ""
      }); drop --resume to replace it, or choose another --out`,
    );
  }
  return { step: info.step, seconds: info.seconds ?? 0 };
}

/**
 * What an experiment's options resolve to before anything runs: its profile, family, dataset,
 * held-out count, training options and adaptation options. Shared by the experiment and its
 * whole-network baseline (src/baseline.ts), so both name the same tasks and budgets.
 */
export async function resolveExperiment(given: ExperimentOptions): Promise<{
  profile: Profile;
  family: string;
  dataset: Dataset;
  options: ExperimentOptions;
  baseTrain: TrainOptions;
  tasks: TaskFamily;
  adaptBase: AdaptOptions;
}> {
  const profile = PROFILE_SETTINGS[given.profile];
  const family = given.family ?? (given.name === "exp1" ? "one_vs_anchor" : "pairs_reversed");
  const dataset = await loadDataset(given.dataset, {
    dataDir: given.dataDir,
    verify: given.verify,
    download: given.train?.download,
  });
  // The resolved count is what results.json records.
  const options: ExperimentOptions = {
    ...given,
    holdoutLast: given.holdoutLast ?? defaultHoldoutLast(family, dataset.classNames),
  };
  const baseTrain: TrainOptions = {
    ...TRAIN_DEFAULTS,
    ...profile.train,
    ...options.train,
    dataset: options.dataset,
    dataDir: options.dataDir,
    verify: options.verify,
    family,
    holdoutLast: options.holdoutLast,
    target: options.target,
    seed: options.seed,
    evalTasks: 0,
    out: join(options.out, "train"),
  };
  // Checkpoints about every tenth of the run, so a stopped experiment can go on (--resume).
  baseTrain.saveEvery = options.train?.saveEvery ?? Math.max(1, Math.ceil(baseTrain.steps / 10));
  // A profile's tasks per step is a ceiling: families with fewer training tasks use them all.
  const holdout = { holdoutLast: baseTrain.holdoutLast, holdout: baseTrain.holdout };
  const validationTasks = baseTrain.validationTasks ??
    defaultValidationTasks(dataset, makeFamily(family, dataset.classNames, holdout));
  const tasks = makeFamily(family, dataset.classNames, { ...holdout, validationTasks });
  // Resolved here as train resolves it, so that --resume compares like with like.
  baseTrain.validationTasks = validationTasks;
  baseTrain.tasksPerStep = Math.min(profile.train.tasksPerStep, tasks.train.length);
  const adaptBase: AdaptOptions = {
    ...ADAPT_DEFAULTS,
    ...profile.adapt,
    ...options.adapt,
    dataDir: options.dataDir,
    verify: options.verify,
    seed: options.seed,
  };
  return { profile, family, dataset, options, baseTrain, tasks, adaptBase };
}

/** Runs the experiment and writes `results.json` into `options.out`. */
export async function runExperiment(
  gpu: Gpu,
  given: ExperimentOptions,
  hooks: { onEvent?: (e: ExperimentEvent) => void; command?: string; signal?: AbortSignal } = {},
): Promise<ExperimentResults> {
  const started = performance.now();
  const resolved = await resolveExperiment(given);
  const { profile, family, dataset, options, baseTrain, tasks } = resolved;
  let { adaptBase } = resolved;
  const say = (text: string) => hooks.onEvent?.({ kind: "phase", text });
  await Deno.mkdir(options.out, { recursive: true });
  const trainRun = async (name: string, changes: Partial<TrainOptions>) => {
    const opts = { ...baseTrain, ...changes, out: join(options.out, name) };
    const kept = options.resume ? await keptTraining(opts) : undefined;
    if (kept && kept.step >= opts.steps) {
      say(`training ${name}: kept from an earlier run (${opts.steps} steps)`);
      return { dir: opts.out, seconds: kept.seconds };
    }
    if (!kept) await Deno.remove(opts.out, { recursive: true }).catch(() => {});
    say(
      kept
        ? `training ${name}: continuing from step ${kept.step} of ${opts.steps}`
        : `training ${name} (${opts.steps} steps of ${opts.tasksPerStep} tasks x ${opts.batch})`,
    );
    // A line about every tenth of the run, so a long profile is never silent for minutes.
    let next = (kept?.step ?? 0) + opts.steps / 10;
    const result = await train(gpu, { ...opts, resume: kept !== undefined }, {
      signal: hooks.signal,
      onEvent: (e) => {
        if (e.kind !== "step" || e.step < next || e.step === e.steps) return;
        next = e.step + e.steps / 10;
        say(
          `training ${name}: step ${e.step}/${e.steps}, loss ${e.loss.toFixed(4)}, ` +
            `${Math.round(e.secondsLeft)} s left`,
        );
      },
    });
    if (result.interrupted) {
      throw new ExperimentError(
        `Stopped at training step ${result.step} of ${opts.steps}; checkpoint saved in ${opts.out}. ` +
          `Run the same command with --resume to go on`,
      );
    }
    return { dir: opts.out, seconds: (kept?.seconds ?? 0) + result.seconds };
  };

  const commit = await describeCommit();
  const phaseSeconds: Record<string, number> = {};
  // An adaptation phase, kept when resuming if an earlier run wrote it with the same options after
  // its generator's last checkpoint (a retrained generator makes every earlier phase stale).
  const phase = async (
    label: string,
    opts: AdaptOptions,
    adaptHooks?: Parameters<typeof adapt>[2],
  ): Promise<AdaptResult> => {
    const file = join(opts.out!, "adapt.json");
    if (hooks.signal?.aborted) {
      throw new ExperimentError(
        `Stopped before '${label}'; what finished is kept in ${options.out}. ` +
          `Run the same command with --resume to go on`,
      );
    }
    let kept: (AdaptResult & { finished?: Method[] }) | undefined;
    if (options.resume) {
      const saved = await readJson<
        AdaptResult & { options: Record<string, unknown>; finished?: Method[] }
      >(file);
      const fresh = saved &&
        (await Deno.stat(file)).mtime! >=
          (await Deno.stat(join(opts.run, "checkpoint.json"))).mtime!;
      const same = saved &&
        differingOptions(saved.options, opts as unknown as Record<string, unknown>, ["source"])
            .length === 0;
      // A file without `finished` was written whole, by a version that wrote it once at the end.
      const whole = saved && (saved.finished ?? opts.methods).length === opts.methods.length;
      if (fresh && same && whole) {
        say(`${label}: kept from an earlier run`);
        return { tasks: saved.tasks, out: saved.out };
      }
      if (fresh && same) {
        kept = saved;
        say(`${label}: keeping ${saved.finished!.join(", ")} from an earlier run`);
      }
    }
    say(label);
    let method: Method | undefined;
    const phaseStarted = performance.now();
    try {
      return await adapt(gpu, opts, {
        kept,
        onEvent: (e) => {
          if (e.kind === "method") method = e.method;
          adaptHooks?.onEvent?.(e);
        },
      });
    } catch (e) {
      if (!(e instanceof Error) || e instanceof ExperimentError) throw e;
      const count = opts.task === "all-heldout" ? tasks.heldOut.length : 1;
      throw new ExperimentError(
        `'${label}' failed${method ? ` in method '${method}'` : ""} on ${count} task(s): ` +
          `${e.message}. Training and the finished phases and methods are kept in ` +
          `${options.out}; run the same command with --resume to go on`,
      );
    } finally {
      phaseSeconds[label] = (performance.now() - phaseStarted) / 1000;
    }
  };

  const base = await trainRun("train", {});
  const { info } = await loadCheckpoint<TrainOptions>(base.dir, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const evaluated = await evaluateRun(gpu, {
    run: base.dir,
    dataDir: options.dataDir,
    verify: options.verify,
  });
  // With validation tasks, the recipe chosen on them replaces the built-in z defaults (flags
  // given to the experiment still win); kept when resuming if newer than the generator.
  let choice: RecipeChoice | undefined;
  const builtIn = adaptBase;
  if ((state.family.validation ?? []).length > 0) {
    const file = join(base.dir, RECIPE_FILE);
    const saved = options.resume ? await readJson<RecipeChoice>(file) : undefined;
    const fresh = saved &&
      (await Deno.stat(file)).mtime! >= (await Deno.stat(join(base.dir, "checkpoint.json"))).mtime!;
    if (fresh) {
      say(`adaptation recipe: kept from an earlier run`);
      choice = saved;
    } else {
      say(`adaptation recipe: choosing on ${state.family.validation!.length} validation tasks`);
      choice = await chooseRecipe(gpu, {
        run: base.dir,
        steps: adaptBase.steps,
        evalEvery: adaptBase.evalEvery,
        batch: adaptBase.batch,
        seed: options.seed,
        dataDir: options.dataDir,
        verify: options.verify,
      }, { onEvent: (e) => say(`adaptation recipe: candidate ${e.index + 1}, ${e.name}`) });
    }
    say(`adaptation recipe: ${choice!.chosen.name}, ${choice!.chosen.zSteps} steps`);
    adaptBase = { ...adaptBase, ...recipeOptions(choice!), ...options.adapt };
  }
  const main = await phase(
    `held-out tasks: every method, batched over ${state.family.heldOut.length} task(s)`,
    {
      ...adaptBase,
      run: base.dir,
      task: "all-heldout",
      methods: ["zero-shot", "z", "z-seed", "head", "full", "finetune", "z-untrained"],
      out: join(options.out, "adapt"),
    },
    {
      // One line per method (and learning rate), so the longest phase is not silent.
      onEvent: (e) => {
        if (e.kind !== "method") return;
        const lr = e.lr > 0 ? `, lr ${e.lr.toPrecision(2)}` : "";
        const decay = e.weightDecay !== undefined ? `, weight decay ${e.weightDecay}` : "";
        const cap = e.method === "full" && e.steps ? `, up to ${e.steps} steps` : "";
        say(`held-out tasks: ${e.method}, ${e.slots} slot(s)${lr}${decay}${cap}`);
      },
    },
  );
  const shotRuns: { shots: number; result: Awaited<ReturnType<typeof adapt>> }[] = [];
  for (const s of options.shots.filter((s) => s > 0)) {
    for (let k = 0; k < options.subsets; k++) {
      shotRuns.push({
        shots: s,
        result: await phase(`${s} image(s) per class, subset ${k + 1}/${options.subsets}`, {
          ...adaptBase,
          run: base.dir,
          task: "all-heldout",
          shots: s,
          seed: mixSeed(options.seed, 1000 + k),
          methods: profile.sweepMethods,
          curves: false,
          out: join(options.out, `adapt_shots_${s}_${k}`),
        }),
      });
    }
  }
  const heldOut: HeldOutResult[] = [];
  for (const [i, t] of main.tasks.entries()) {
    say(`held-out task '${t.taskName}': controls`);
    const controls = await controls_(gpu, base.dir, state, t.task, {
      ...options,
      fairPick: t.ranking[0]?.task,
    });
    const shots: HeldOutResult["shots"] = [];
    for (const s of options.shots) {
      for (const method of profile.sweepMethods) {
        const found = s === 0
          ? [t.results.find((m) => m.method === method)!]
          : shotRuns.filter((r) => r.shots === s).map((r) =>
            r.result.tasks[i]!.results.find((m) => m.method === method)!
          );
        const acc = found.map((m) => m.accuracy);
        shots.push({
          shots: s,
          method,
          accuracy: average(acc),
          loss: average(found.map((m) => m.loss)),
          std: acc.length > 1 ? sampleStd(acc) : 0,
          subsets: found.length,
          values: acc,
        });
      }
    }
    // The control a reader asks first: the trained z that fits the K shots best (the ranking
    // that chose the start), not adapted, scored on the test images.
    const pickedBy = (ranking: RankedZ[]) =>
      controls.perTrainingZ.find((p) => p.task === ranking[0]?.task)?.accuracy;
    for (const s of options.shots) {
      const picks = (s === 0
        ? [t.ranking]
        : shotRuns.filter((r) =>
          r.shots === s
        ).map((r) => r.result.tasks[i]!.ranking)).map(pickedBy);
      if (
        picks.length === 0 || picks.some((p) =>
          p === undefined
        )
      ) continue;
      const acc = picks as number[];
      shots.push({
        shots: s,
        method: TRAINED_Z,
        accuracy: average(acc),
        loss: NaN,
        std: acc.length > 1 ? sampleStd(acc) : 0,
        subsets: acc.length,
        values: acc,
      });
    }
    heldOut.push({ task: t.task, name: t.taskName, methods: t.results, controls, shots });
  }

  const ablations: AblationResult[] = [];
  if (options.ablations) {
    const zOf = (r: Awaited<ReturnType<typeof adapt>>, method: Method = "z") =>
      r.tasks.map((t) => t.results.find((m) => m.method === method)!.accuracy);
    const row = (name: string, zOnly: number[], trained = evaluated, seconds = 0) => ({
      name,
      trainedAccuracy: trained.trainedAccuracy,
      zeroShot: trained.heldOutAccuracy,
      zOnly: average(zOnly),
      zOnlyPerTask: zOnly,
      trainSeconds: seconds,
    });
    ablations.push(row("the seed's recipe (mean z, lr 0.01, 150 steps)", zOf(main, "z-seed")));
    const adaptOnly: [string, Partial<AdaptOptions>][] = [
      ["+ validation stopping (mean z, no prior)", { init: "mean", prior: 0 }],
      ["+ best trained z as start (no prior)", { init: "best", prior: 0 }],
      ["+ population of starts (no prior)", { prior: 0 }],
    ];
    for (const [label, changes] of adaptOnly) {
      const r = await phase(`ablation: ${label}`, {
        ...adaptBase,
        ...changes,
        run: base.dir,
        task: "all-heldout",
        methods: ["z"],
        curves: false,
        out: join(options.out, `ablation_adapt_${ablations.length}`),
      });
      ablations.push(row(label, zOf(r)));
    }
    // The last step adds the prior, which makes the new defaults: the main run's z.
    ablations.push(row("+ prior (all of the new defaults)", zOf(main)));
    const variants: [string, string, Partial<TrainOptions>][] = [
      ["generator with one hidden layer (256)", "ablation_hidden", { hidden: [256] }],
      ["meta-training (first-order, every 2nd step)", "ablation_meta", { meta: true }],
    ];
    for (const [label, dirName, changes] of variants) {
      const run = await trainRun(dirName, changes);
      const ev = await evaluateRun(gpu, {
        run: run.dir,
        dataDir: options.dataDir,
        verify: options.verify,
      });
      const r = await phase(`ablation: ${label}, adapting`, {
        ...adaptBase,
        run: run.dir,
        task: "all-heldout",
        methods: ["z"],
        curves: false,
        out: join(run.dir, "adapt"),
      });
      ablations.push(row(label, zOf(r), ev, run.seconds));
    }
  }

  let recipe: ExperimentResults["recipe"];
  if (choice) {
    const r = await phase(`held-out tasks: z with the built-in defaults (no recipe)`, {
      ...builtIn,
      run: base.dir,
      task: "all-heldout",
      methods: ["z"],
      curves: false,
      out: join(options.out, "adapt_builtin_defaults"),
    });
    recipe = {
      chosen: choice.chosen,
      validationTasks: choice.validationTasks,
      validation: {
        chosen: choice.chosenScore,
        defaults: choice.defaults,
        seedRecipe: choice.seedRecipe,
        zeroShot: choice.zeroShot,
      },
      seconds: choice.seconds,
      builtInDefaults: r.tasks.map((t) => ({
        task: t.task,
        accuracy: t.results[0]!.accuracy,
        loss: t.results[0]!.loss,
      })),
    };
  }

  const results: ExperimentResults = {
    options,
    command: hooks.command ?? "",
    adapter: `${gpu.description}${gpu.isFallback ? " (software)" : ""}`,
    dataset: state.dataset.source,
    family,
    taskCounts: { train: state.family.train.length, heldOut: state.family.heldOut.length },
    trainedAccuracy: evaluated.trainedAccuracy,
    trainSeconds: base.seconds,
    reserve: baseTrain.reserve,
    commit,
    phaseSeconds,
    fullBudget: {
      epochs: adaptBase.fullEpochs,
      weightDecays: adaptBase.fullWeightDecay,
      augment: adaptBase.fullAugment,
      flip: fullAugment(adaptBase, dataset)?.flip ?? false,
    },
    heldOut,
    ablations,
    ...(recipe ? { recipe } : {}),
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
  options: ExperimentOptions & { fairPick?: number },
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
    bestTrainingZFair: options.fairPick === undefined
      ? NaN
      : perTrain[state.family.train.indexOf(options.fairPick)]!,
    meanOverTrainingZ: average(perTrain),
    perTrainingZ: state.family.train.map((t, i) => ({ task: t, accuracy: perTrain[i]! })),
    ...(twin >= 0 ? { reversedTwinZ: perTrain[twin]! } : {}),
  };
}

/** Mean of numbers (0 for none). */
export function average(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}
