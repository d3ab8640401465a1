/**
 * The SuperNet command line: `train`, `adapt`, `evaluate`, `export`, `predict`, `tasks`,
 * `experiment`, `report`. Parses flags into
 * each subcommand's options, runs it, and prints progress and results. Exit codes: 0 ok,
 * 1 failure, 2 usage error.
 *
 * @module
 */
import { basename, join, resolve } from "node:path";
import {
  adapt,
  ADAPT_DEFAULTS,
  type AdaptOptions,
  METHODS,
  SEED_ADAPT_PRESET,
  type TaskAdaptResult,
  Z_INITS,
} from "./src/adapt.ts";
import { CheckpointError, loadCheckpoint } from "./src/checkpoint.ts";
import {
  checkOption,
  type CommandHelp,
  type Flag,
  flagName,
  HELP_FLAG,
  parseFlags,
  usage,
  UsageError,
} from "./src/cli/flags.ts";
import { DataError, DATASETS } from "./src/data/dataset.ts";
import { FAMILIES } from "./src/data/tasks.ts";
import { getGpu, type Gpu, GpuUnavailableError } from "./src/gpu/device.ts";
import { TARGETS } from "./src/model/target.ts";
import { OPTIMIZERS, SCHEDULES } from "./src/optim.ts";
import {
  EXPERIMENT_DEFAULTS,
  ExperimentError,
  type ExperimentOptions,
  EXPERIMENTS,
  PROFILES,
  runExperiment,
} from "./src/experiment.ts";
import {
  FEWSHOT_DEFAULTS,
  FEWSHOT_METHODS,
  FEWSHOT_PROFILES,
  type FewShotOptions,
  runFewShot,
  TRAININGS,
} from "./src/fewshot/experiment.ts";
import { writeFewShotReport } from "./src/fewshot/report.ts";
import { SPLITS } from "./src/fewshot/split.ts";
import { combineReports, verdict, writeReport } from "./src/report.ts";
import { slurmLog, type SweepTarget } from "./src/sweep/backend.ts";
import { type CellStatus, runCell } from "./src/sweep/cell.ts";
import { localBackend, LOG_ENV } from "./src/sweep/local.ts";
import { runSweep, sweepStatus } from "./src/sweep/mod.ts";
import {
  expandCells,
  isSweepDir,
  loadPlan,
  PlanError,
  readSweep,
  sameCell,
  type SlurmSettings,
  SweepError,
  type SweepRecord,
  writeSweep,
} from "./src/sweep/plan.ts";
import { writeSweepReport } from "./src/sweep/report.ts";
import { slurmBackend, SlurmError } from "./src/sweep/slurm.ts";
import { evaluateRun, exportFromRun } from "./src/evaluate.ts";
import { EXPORT_FORMATS, type ExportFormat } from "./src/export/mod.ts";
import { imageTask, type ImageTaskOptions } from "./src/image_task.ts";
import { FITS, ImageError, type SkippedImage } from "./src/images.ts";
import { predict, PREDICT_DEFAULTS, type PredictOptions } from "./src/predict.ts";
import { SafetensorsError } from "./src/safetensors.ts";
import {
  loadTasks,
  NonFiniteLossError,
  SEED_TRAIN_PRESET,
  train,
  TRAIN_DEFAULTS,
  type TrainEvent,
  type TrainOptions,
} from "./src/train.ts";

const PICTURE_FLAGS: Flag[] = [
  {
    flag: "fit",
    key: "fit",
    kind: "string",
    values: FITS,
    help: "centre-crop to the input's shape, or stretch",
    default: PREDICT_DEFAULTS.fit,
  },
  { flag: "strict", key: "strict", kind: "bool", help: "stop at the first bad picture" },
];

const DATA_FLAGS: Flag[] = [
  { flag: "data-dir", key: "dataDir", kind: "string", help: "folder of dataset files" },
  { flag: "no-verify", key: "verify", kind: "bool", help: "use files whose md5 differs" },
];

const TASK_FLAGS: Flag[] = [
  { flag: "dataset", key: "dataset", kind: "string", values: DATASETS, help: "dataset" },
  ...DATA_FLAGS,
  {
    flag: "download",
    key: "download",
    kind: "bool",
    help: "fetch the official archive if missing",
  },
  { flag: "family", key: "family", kind: "string", values: FAMILIES, help: "task family" },
  { flag: "holdout", key: "holdout", kind: "ints", help: "task indices held out (comma list)" },
  { flag: "holdout-last", key: "holdoutLast", kind: "int", help: "hold out the last K tasks" },
];

const TRAIN_FLAGS: Flag[] = [
  ...TASK_FLAGS,
  { flag: "target", key: "target", kind: "string", values: TARGETS, help: "target network" },
  { flag: "z-dim", key: "zDim", kind: "int", help: "length of a task vector z" },
  { flag: "hidden", key: "hidden", kind: "ints", help: "generator hidden widths (comma list)" },
  {
    flag: "output",
    key: "output",
    kind: "string",
    values: ["tanh", "linear"],
    help: "head output",
  },
  { flag: "output-scale", key: "outputScale", kind: "number", help: "generated = scale * tanh" },
  {
    flag: "head-scale",
    key: "headScale",
    kind: "string",
    values: ["none", "fan_in"],
    help: "per-head output scale (fan_in: 3 init stds)",
  },
  {
    flag: "z-init",
    key: "zInit",
    kind: "string",
    values: ["one_hot", "gaussian"],
    help: "initial task vectors",
  },
  { flag: "steps", key: "steps", kind: "int", help: "training steps" },
  {
    flag: "tasks-per-step",
    key: "tasksPerStep",
    kind: "int",
    help: "T: tasks per step (default 8, or all training tasks if fewer)",
  },
  { flag: "batch", key: "batch", kind: "int", help: "B: images per task per step" },
  { flag: "balanced", key: "balanced", kind: "bool", help: "half positive batches" },
  { flag: "augment", key: "augment", kind: "bool", help: "random crop and flip" },
  {
    flag: "reserve",
    key: "reserve",
    kind: "number",
    help: "fraction of training images kept out for adaptation's validation",
    default: TRAIN_DEFAULTS.reserve,
  },
  { flag: "optimizer", key: "optimizer", kind: "string", values: OPTIMIZERS, help: "optimiser" },
  { flag: "lr", key: "lr", kind: "number", help: "learning rate" },
  { flag: "z-lr", key: "zLr", kind: "number", help: "learning rate of z (default --lr)" },
  { flag: "schedule", key: "schedule", kind: "string", values: SCHEDULES, help: "lr schedule" },
  { flag: "warmup", key: "warmup", kind: "int", help: "warm-up steps" },
  { flag: "clip", key: "clip", kind: "number", help: "clip gradient norm (0: off)" },
  { flag: "eval-every", key: "evalEvery", kind: "int", help: "evaluate every N steps" },
  { flag: "eval-tasks", key: "evalTasks", kind: "int", help: "evaluate at most N tasks (0: all)" },
  { flag: "log-every", key: "logEvery", kind: "int", help: "read the loss every N steps" },
  { flag: "save-every", key: "saveEvery", kind: "int", help: "checkpoint every N steps" },
  { flag: "seed", key: "seed", kind: "int", help: "seed" },
  { flag: "out", key: "out", kind: "string", help: "run folder" },
  { flag: "resume", key: "resume", kind: "bool", help: "continue the run in --out" },
  { flag: "meta", key: "meta", kind: "bool", help: "meta-train for adaptability (first-order)" },
  { flag: "meta-every", key: "metaEvery", kind: "int", help: "every N-th step is a meta step" },
  { flag: "meta-inner-steps", key: "metaInnerSteps", kind: "int", help: "inner z steps" },
  { flag: "meta-inner-lr", key: "metaInnerLr", kind: "number", help: "inner z learning rate" },
  {
    flag: "preset",
    key: "preset",
    kind: "string",
    values: ["seed"],
    help: "the seed's generator and training (no meta-training); flags override it",
  },
];

const ADAPT_FLAGS: Flag[] = [
  { flag: "run", key: "run", kind: "string", help: "run folder written by train" },
  { flag: "task", key: "task", kind: "string", help: "task index or name (default held-out)" },
  { flag: "methods", key: "methods", kind: "string", help: `comma list of ${METHODS.join(",")}` },
  { flag: "init", key: "init", kind: "string", values: Z_INITS, help: "initial z" },
  { flag: "population", key: "population", kind: "int", help: "K trained z beside the mean z" },
  { flag: "steps", key: "steps", kind: "int", help: "most steps of every method" },
  { flag: "batch", key: "batch", kind: "int", help: "images per step" },
  { flag: "shots", key: "shots", kind: "int", help: "images per class (0: all)" },
  { flag: "lr", key: "lr", kind: "number", help: "learning rate of z (0: 0.1 x z spread)" },
  { flag: "full-lr", key: "fullLr", kind: "number", help: "learning rate of full" },
  { flag: "head-lr", key: "headLr", kind: "number", help: "learning rate of head" },
  { flag: "finetune-lr", key: "finetuneLr", kind: "number", help: "learning rate of finetune" },
  { flag: "no-lr-grid", key: "lrGrid", kind: "bool", help: "baselines skip the lr grid" },
  { flag: "prior", key: "prior", kind: "number", help: "pull of z toward the trained z (0: off)" },
  {
    flag: "validation",
    key: "validation",
    kind: "number",
    help: "validation slice (0: none): this fraction of the training images, or, for a run " +
      "trained with a reserve, its reserved images whatever the value",
  },
  { flag: "optimizer", key: "optimizer", kind: "string", values: OPTIMIZERS, help: "optimiser" },
  { flag: "eval-every", key: "evalEvery", kind: "int", help: "evaluate every N steps" },
  { flag: "patience", key: "patience", kind: "int", help: "early stopping patience (0: off)" },
  {
    flag: "no-forgetting",
    key: "forgetting",
    kind: "bool",
    help: "skip re-scoring after finetune",
  },
  {
    flag: "preset",
    key: "preset",
    kind: "string",
    values: ["seed"],
    help: "the seed's recipe (mean z, fixed lr and steps); flags override it",
  },
  { flag: "seed", key: "seed", kind: "int", help: "seed" },
  {
    flag: "out",
    key: "out",
    kind: "string",
    help: "results folder (default <run>/adapt, with --images <run>/adapt_<folder>)",
  },
  ...DATA_FLAGS,
  {
    flag: "images",
    key: "images",
    kind: "string",
    help: "your own task: a folder with one subfolder of pictures per class (two)",
  },
  { flag: "test-dir", key: "testDir", kind: "string", help: "held-out pictures, same layout" },
  {
    flag: "positive",
    key: "positive",
    kind: "string",
    help: "subfolder of the positive class (default: the second by name)",
  },
  ...PICTURE_FLAGS,
];

/** Training flags `experiment` applies on top of its profile (ExperimentOptions.train). */
const EXPERIMENT_TRAIN_FLAGS: Flag[] = TRAIN_FLAGS.filter((f) =>
  [
    "z-dim",
    "hidden",
    "output",
    "output-scale",
    "z-init",
    "steps",
    "tasks-per-step",
    "batch",
    "balanced",
    "augment",
    "reserve",
    "optimizer",
    "lr",
    "z-lr",
    "schedule",
    "warmup",
    "clip",
    "head-scale",
    "meta",
    "meta-every",
    "meta-inner-steps",
    "meta-inner-lr",
  ].includes(f.flag)
).map((f) => ({
  ...f,
  help: f.help.startsWith("training") ? f.help : `training: ${f.help}`,
  into: "train" as const,
}));

/** Adaptation flags of `experiment` (ExperimentOptions.adapt), `adapt-` where training has the name. */
const EXPERIMENT_ADAPT_FLAGS: Flag[] = ADAPT_FLAGS.filter((f) =>
  [
    "init",
    "population",
    "steps",
    "batch",
    "lr",
    "full-lr",
    "head-lr",
    "finetune-lr",
    "no-lr-grid",
    "prior",
    "validation",
    "optimizer",
    "patience",
  ].includes(f.flag)
).map((f) => {
  const prefix = ["init", "steps", "batch", "lr", "optimizer"].includes(f.flag);
  return {
    ...f,
    flag: prefix ? `adapt-${f.flag}` : f.flag,
    key: prefix ? `adapt${f.key[0]!.toUpperCase()}${f.key.slice(1)}` : f.key,
    help: `adaptation: ${f.help}`,
    into: "adapt" as const,
    field: f.key,
  };
});

const EXPERIMENT_FLAGS: Flag[] = [
  { flag: "dataset", key: "dataset", kind: "string", values: DATASETS, help: "dataset" },
  ...DATA_FLAGS,
  { flag: "family", key: "family", kind: "string", values: FAMILIES, help: "task family" },
  { flag: "profile", key: "profile", kind: "string", values: PROFILES, help: "size" },
  {
    flag: "holdout-last",
    key: "holdoutLast",
    kind: "int",
    help: "hold out the last K tasks (default 3, fewer where the family would keep under 2 " +
      "training tasks)",
  },
  {
    flag: "holdout",
    key: "holdout",
    kind: "string",
    help: "task indices in train and tasks; not an experiment flag",
    rejected: "--holdout is not an experiment flag: use --holdout-last K to hold out the last K " +
      "tasks (--holdout takes task indices in train and tasks)",
  },
  { flag: "target", key: "target", kind: "string", values: TARGETS, help: "target network" },
  { flag: "shots", key: "shots", kind: "ints", help: "images per class to sweep (0: all)" },
  { flag: "no-ablations", key: "ablations", kind: "bool", help: "skip the ablations" },
  { flag: "seed", key: "seed", kind: "int", help: "seed" },
  {
    flag: "out",
    key: "out",
    kind: "string",
    help: "output folder (default runs/<exp>, e.g. runs/exp1)",
  },
  {
    flag: "resume",
    key: "resume",
    kind: "bool",
    help: "keep what an earlier run of these options finished in --out (training, phases)",
  },
  ...EXPERIMENT_TRAIN_FLAGS,
  ...EXPERIMENT_ADAPT_FLAGS,
];

const FEWSHOT_FLAGS: Flag[] = [
  { flag: "dataset", key: "dataset", kind: "string", values: DATASETS, help: "dataset" },
  ...DATA_FLAGS,
  {
    flag: "split",
    key: "split",
    kind: "string",
    values: SPLITS,
    help: "class split (cifar-fs: Bertinetto et al.'s, for cifar100)",
  },
  { flag: "rotations", key: "rotations", kind: "bool", help: "Omniglot: rotations as new classes" },
  { flag: "ways", key: "ways", kind: "int", help: "N: classes per episode" },
  { flag: "shots", key: "shots", kind: "ints", help: "K: support images per class (comma list)" },
  { flag: "queries", key: "queries", kind: "int", help: "Q: query images per class" },
  { flag: "episodes", key: "episodes", kind: "int", help: "test episodes per method and K" },
  {
    flag: "profile",
    key: "profile",
    kind: "string",
    values: FEWSHOT_PROFILES,
    help: "size (smoke: minutes on a CPU)",
  },
  { flag: "width", key: "width", kind: "int", help: "conv4 channels (default: the profile's)" },
  {
    flag: "steps",
    key: "steps",
    kind: "int",
    help: "generator training steps (default: profile's)",
  },
  { flag: "chunk", key: "chunk", kind: "int", help: "episodes adapted side by side" },
  {
    flag: "trainings",
    key: "trainings",
    kind: "strings",
    values: TRAININGS,
    help: "how generators train (comma list)",
  },
  {
    flag: "methods",
    key: "methods",
    kind: "strings",
    values: FEWSHOT_METHODS,
    help: "methods scored (comma list)",
  },
  { flag: "seed", key: "seed", kind: "int", help: "random seed" },
  { flag: "out", key: "out", kind: "string", help: "output folder" },
];

/** `experiment fewshot`: its own flags (N-way episodes), dispatched from `experiment`. */
const FEWSHOT_COMMAND: Command = {
  summary: "N-way K-shot episodes of classes never seen in training, every method alike",
  flags: FEWSHOT_FLAGS,
  defaults: FEWSHOT_DEFAULTS,
  run: runFewShotCommand,
};

const SWEEP_FLAGS: Flag[] = [
  { flag: "out", key: "out", kind: "string", help: "sweep folder (default runs/<plan name>)" },
  {
    flag: "backend",
    key: "backend",
    kind: "string",
    values: ["local", "slurm"],
    help: "where cells run",
  },
  { flag: "parallel", key: "parallel", kind: "int", help: "cells at once (slurm: the array's %P)" },
  { flag: "dry-run", key: "dryRun", kind: "bool", help: "print the cells and stop" },
  { flag: "force", key: "force", kind: "bool", help: "rerun cells that are done" },
  { flag: "cell", key: "cell", kind: "int", help: "run one cell by index (what each job runs)" },
  { flag: "status", key: "status", kind: "string", help: "print each cell's state in this folder" },
  { flag: "wait", key: "wait", kind: "bool", help: "slurm: wait until the array ends" },
  { flag: "poll", key: "poll", kind: "number", help: "slurm: seconds between squeue polls" },
  { flag: "partition", key: "partition", kind: "string", help: "slurm: partition" },
  { flag: "time", key: "time", kind: "string", help: "slurm: time limit per cell" },
  { flag: "cpus", key: "cpus", kind: "int", help: "slurm: CPUs per cell" },
  { flag: "mem", key: "mem", kind: "string", help: "slurm: memory per cell (e.g. 8G)" },
  { flag: "gres", key: "gres", kind: "string", help: "slurm: generic resources (e.g. gpu:1)" },
  {
    flag: "sbatch-arg",
    key: "args",
    kind: "strings",
    help: "slurm: one more sbatch argument (repeatable)",
  },
];

/** Defaults of `sweep`. */
const SWEEP_DEFAULTS = { backend: "local", parallel: 1, poll: 5 };

const COMMON: Flag[] = [
  { flag: "config", key: "config", kind: "string", help: "JSON file of options" },
  { flag: "quiet", key: "quiet", kind: "bool", help: "no progress line" },
  HELP_FLAG,
];

interface Command extends CommandHelp {
  /** Whether the positional argument repeats. */
  many?: boolean;
  /** Whether the command checks for its positional argument itself. */
  optional?: boolean;
  run(
    gpu: () => Promise<Gpu>,
    options: Record<string, unknown>,
    quiet: boolean,
    positionals: string[],
  ): Promise<void>;
}

const COMMANDS: Record<string, Command> = {
  train: {
    summary: "train the generator and task vectors on a task family",
    flags: TRAIN_FLAGS,
    defaults: TRAIN_DEFAULTS,
    run: runTrain,
  },
  adapt: {
    summary: "learn a held-out task by its z only, against whole-network baselines",
    flags: ADAPT_FLAGS,
    defaults: ADAPT_DEFAULTS,
    run: runAdapt,
  },
  evaluate: {
    summary: "test accuracy of a run's tasks and its held-out task with the mean z",
    flags: [
      { flag: "run", key: "run", kind: "string", help: "run folder" },
      ...DATA_FLAGS,
    ],
    run: runEvaluate,
  },
  export: {
    summary: "write a task's generated network (safetensors or ONNX) + JSON with its preprocessing",
    flags: [
      { flag: "run", key: "run", kind: "string", help: "run folder" },
      { flag: "task", key: "task", kind: "string", help: "task index or name" },
      { flag: "z", key: "z", kind: "string", help: "a z file written by adapt" },
      { flag: "out", key: "out", kind: "string", help: "output folder (default <run>/export)" },
      {
        flag: "format",
        key: "format",
        kind: "string",
        values: EXPORT_FORMATS,
        help: "weights for PyTorch, or an ONNX model (default safetensors)",
      },
      ...DATA_FLAGS,
    ],
    run: runExport,
  },
  predict: {
    summary: "classify pictures with a learned z: probability and class of each",
    flags: [
      { flag: "run", key: "run", kind: "string", help: "run folder" },
      { flag: "z", key: "z", kind: "string", help: "a z file written by adapt" },
      { flag: "task", key: "task", kind: "string", help: "or a task of the run (index or name)" },
      { flag: "json", key: "json", kind: "bool", help: "one JSON object per line" },
      { flag: "batch", key: "batch", kind: "int", help: "images per GPU batch" },
      ...PICTURE_FLAGS,
      ...DATA_FLAGS,
    ],
    defaults: PREDICT_DEFAULTS,
    positional: "FILES_OR_DIRS...",
    many: true,
    run: runPredict,
  },
  tasks: {
    summary: "list a family's tasks with class names and held-out marks",
    flags: TASK_FLAGS,
    defaults: TRAIN_DEFAULTS,
    run: runTasks,
  },
  experiment: {
    summary: "run the seed's exp1 or exp2 end to end with controls and ablations",
    flags: EXPERIMENT_FLAGS,
    defaults: EXPERIMENT_DEFAULTS,
    note: "Training and adaptation flags override the profile's settings.",
    positional: "exp1|exp2 (fewshot: see 'deno task experiment fewshot --help')",
    run: runExperimentCommand,
  },
  sweep: {
    summary: "run a plan's grid of experiments here or on Slurm; --status DIR shows each cell",
    flags: SWEEP_FLAGS,
    defaults: SWEEP_DEFAULTS,
    positional: "PLAN.json",
    optional: true,
    run: runSweepCommand,
  },
  report: {
    summary:
      "write report.md with SVG plots from experiment or sweep folders (--out combines them)",
    flags: [{ flag: "out", key: "out", kind: "string", help: "one Markdown file for all DIRs" }],
    positional: "DIR...",
    many: true,
    run: runReport,
  },
};

/** A progress printer: one rewritten line on a terminal, plain lines otherwise. */
function progress(quiet: boolean): { line(text: string): void; done(): void } {
  const tty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  let open = false;
  return {
    line(text: string) {
      if (quiet) return;
      if (tty) {
        Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text}`));
        open = true;
      } else console.error(text);
    },
    done() {
      if (open) Deno.stderr.writeSync(encoder.encode("\n"));
      open = false;
    },
  };
}

function minutes(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const m = Math.floor(seconds / 60);
  return `${m}:${String(Math.round(seconds % 60)).padStart(2, "0")}`;
}

async function runTrain(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
): Promise<void> {
  const { preset, ...rest } = given;
  const chosen = { ...(preset === "seed" ? SEED_TRAIN_PRESET : {}), ...rest };
  let options: TrainOptions = { ...TRAIN_DEFAULTS, ...chosen } as TrainOptions;
  if (options.resume) {
    const saved = await loadCheckpoint<TrainOptions>(options.out, []);
    options = { ...saved.info.options, ...chosen, resume: true } as TrainOptions;
  } else {
    await refuseToOverwrite(options.out);
  }
  await outputFolder("out", options.out);
  const gpu = await getGpuFn();
  const p = progress(quiet);
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    const result = await train(gpu, options, {
      signal: controller.signal,
      onEvent: (e: TrainEvent) => {
        if (e.kind === "start") {
          p.line(
            `Training ${e.trainTasks} of ${e.tasks} tasks, ${
              e.parameters.toLocaleString("en")
            } generator parameters` +
              (e.step > 0 ? `, resuming at step ${e.step}` : ""),
          );
          p.done();
        } else if (e.kind === "step") {
          p.line(
            `step ${e.step}/${e.steps}  loss ${e.loss.toFixed(4)}  acc ${
              (100 * e.accuracy).toFixed(1)
            }%  ` +
              `${Math.round(e.imagesPerSecond)} img/s  ${minutes(e.secondsLeft)} left`,
          );
        } else if (e.kind === "eval") {
          p.line(
            `step ${e.step}: test accuracy ${(100 * e.accuracy).toFixed(2)}%, loss ${
              e.loss.toFixed(4)
            } (training tasks)`,
          );
          p.done();
        }
      },
    });
    p.done();
    if (result.interrupted) {
      console.log(
        `Interrupted at step ${result.step}; checkpoint saved. Resume with: deno task train --resume --out ${options.out}`,
      );
      return;
    }
    console.log(
      `Trained ${result.step} steps in ${
        result.seconds.toFixed(1)
      } s; run folder ${options.out}. ` +
        `Next: deno task adapt --run ${options.out}`,
    );
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

/**
 * Makes sure an output folder can be written before any work starts: a file there is a usage
 * error (it is never replaced), and a folder that cannot be created is named with the reason.
 */
async function outputFolder(flag: string, path: string): Promise<void> {
  const info = await Deno.stat(path).catch(() => undefined);
  if (info && !info.isDirectory) {
    throw new UsageError(
      `--${flag} ${path} is a file; expected a folder (the file is left as it is): choose another --${flag}`,
    );
  }
  if (info) return;
  try {
    await Deno.mkdir(path, { recursive: true });
    created.push(path);
  } catch (e) {
    const why = e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "permission denied"
      : e instanceof Deno.errors.NotADirectory || e instanceof Deno.errors.AlreadyExists
      ? "part of the path is a file"
      : (e as Error).message;
    throw new OutputError(
      `cannot create --${flag} ${path} (${why}); choose a folder you can write to`,
    );
  }
}

/** Output folders this command created, removed again (when still empty) if it fails. */
const created: string[] = [];

/** A place the command cannot write to: one line, exit code 1. */
class OutputError extends Error {}

/** Prints one warning line per skipped picture. */
function warnSkipped(s: SkippedImage): void {
  console.error(`warning: skipped ${s.file}: ${s.reason}`);
}

/** A run folder that holds a checkpoint is not replaced, except the default runs/latest. */
async function refuseToOverwrite(out: string): Promise<void> {
  const exists = await Deno.stat(join(out, "checkpoint.json")).then(() => true, () => false);
  if (exists && out !== TRAIN_DEFAULTS.out) {
    throw new UsageError(
      `${out} already holds a run; pass --resume to continue it or choose another --out`,
    );
  }
}

function adaptTable(result: TaskAdaptResult, scored = "test"): string {
  const rows = [
    ["method", "trainable", `${scored} acc`, `${scored} loss`, "steps", "lr", "seconds", "note"],
    ...result.results.map((r) => [
      r.method,
      r.trainable.toLocaleString("en"),
      `${(100 * r.accuracy).toFixed(2)}%`,
      r.loss.toFixed(4),
      `${r.steps}/${r.stepsRun}`,
      r.trainable > 0 ? r.lr.toPrecision(2) : "-",
      r.seconds.toFixed(1),
      [
        r.collapsed ? "COLLAPSED (one class for every image)" : "",
        r.start && r.method !== "zero-shot" ? `from ${r.start}` : "",
        r.forgetting
          ? `training tasks ${(100 * r.forgetting.before).toFixed(2)}% -> ${
            (100 * r.forgetting.after).toFixed(2)
          }%`
          : "",
      ].filter(Boolean).join("; "),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

async function runAdapt(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
): Promise<void> {
  const { images, testDir, positive, fit, strict, preset, ...rest } = given as
    & Record<string, unknown>
    & Partial<ImageTaskOptions>;
  const options = {
    ...ADAPT_DEFAULTS,
    ...(preset === "seed" ? SEED_ADAPT_PRESET : {}),
    ...rest,
  } as AdaptOptions;
  if (!(options.validation >= 0 && options.validation < 0.5)) {
    throw new UsageError(`--validation ${options.validation} must be in [0, 0.5)`);
  }
  if (images === undefined) {
    for (const [flag, value] of Object.entries({ testDir, positive, fit, strict })) {
      if (value !== undefined) {
        throw new UsageError(`--${flagName(flag)} only applies with --images DIR`);
      }
    }
  } else if (options.task !== undefined) {
    throw new UsageError("--task and --images are exclusive: --images brings its own task");
  }
  if (typeof given.methods === "string") {
    const methods = (given.methods as string).split(",");
    for (const m of methods) {
      if (!(METHODS as readonly string[]).includes(m)) {
        throw new UsageError(`--methods: unknown method '${m}'; expected ${METHODS.join(", ")}`);
      }
    }
    options.methods = methods as AdaptOptions["methods"];
  }
  if (options.steps < 1 || options.batch < 1 || options.evalEvery < 1) {
    throw new UsageError("--steps, --batch and --eval-every must be at least 1");
  }
  await loadCheckpoint(options.run, []);
  let scored = "test";
  if (images !== undefined) {
    const { custom, report } = await imageTask(
      options.run,
      { images, testDir, positive, fit, strict, dataDir: options.dataDir, verify: options.verify },
      { onSkip: warnSkipped },
    );
    const [neg, pos] = report.classNames;
    const count = (n: [number, number]) => `${n[0] + n[1]} (${n[0]} '${neg}', ${n[1]} '${pos}')`;
    console.error(
      `Pictures: learning from ${count(report.train)}, ` +
        (report.heldOut ? `scoring on ${count(report.test)} in ${testDir}` : "no --test-dir") +
        `; ${report.skipped.length} skipped. Positive class: '${pos}'`,
    );
    if (!report.heldOut) scored = "train";
    options.custom = custom;
    options.out ??= join(options.run, `adapt_${custom.name}`);
  }
  await outputFolder("out", options.out ?? join(options.run, "adapt"));
  const gpu = await getGpuFn();
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  const p = progress(quiet);
  const result = await adapt(gpu, options, {
    onEvent: (e) => {
      if (e.kind === "method") {
        p.done();
        p.line(
          `${e.method}: ${e.trainable.toLocaleString("en")} trainable numbers, ${e.slots} slot(s)` +
            (e.trainable > 0 ? `, lr ${e.lr.toPrecision(2)}` : ""),
        );
      } else {
        p.line(
          `${e.method}: step ${e.step}/${e.steps}  ${e.split} acc ${
            (100 * e.accuracy).toFixed(2)
          }%  loss ${e.loss.toFixed(4)}`,
        );
      }
    },
  });
  p.done();
  const custom = options.custom;
  for (const t of result.tasks) {
    console.log(
      custom
        ? `Task '${t.taskName}' (your pictures): learned from ${t.trainImages} images` +
          (t.validationImages ? ` (${t.validationImages} more held out for validation)` : "") +
          (scored === "test"
            ? `, tested on ${t.testImages} held-out ones`
            : `, scored on the same images (pass --test-dir for a held-out score)`)
        : `Task ${t.task} '${t.taskName}': learned from ${t.trainImages} training images` +
          (t.validationImages ? ` (${t.validationImages} more held out for validation)` : "") +
          `, tested on ${t.testImages}`,
    );
    console.log(adaptTable(t, scored));
  }
  console.log(`Results in ${join(result.out, "adapt.json")}`);
  if (options.methods.includes("z")) {
    for (const t of result.tasks) {
      const zFile = join(result.out, `z_${custom?.name ?? String(t.task)}.safetensors`);
      console.log(
        `z in ${zFile}. Next: deno task predict --run ${options.run} --z ${zFile} PICTURES...`,
      );
    }
  }
}

async function runEvaluate(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
): Promise<void> {
  const gpu = await getGpuFn();
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  const run = (given.run as string | undefined) ?? ADAPT_DEFAULTS.run;
  const report = await evaluateRun(gpu, {
    run,
    dataDir: given.dataDir as string | undefined,
    verify: given.verify as boolean | undefined,
  });
  for (const s of report.tasks) {
    console.log(
      `${String(s.task).padStart(4)}  ${s.name.padEnd(28)} ${
        s.heldOut ? "held-out (mean z)" : "trained"
      }`.padEnd(60) +
        `  acc ${(100 * s.accuracy).toFixed(2)}%  loss ${s.loss.toFixed(4)}  (${s.count} images)`,
    );
  }
  console.log(
    `Mean test accuracy: trained tasks ${
      (100 * report.trainedAccuracy).toFixed(2)
    }%, held-out with mean z ${(100 * report.heldOutAccuracy).toFixed(2)}%`,
  );
}

async function runExport(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
): Promise<void> {
  const run = (given.run as string | undefined) ?? ADAPT_DEFAULTS.run;
  const out = (given.out as string | undefined) ?? join(run, "export");
  await loadCheckpoint(run, []);
  await outputFolder("out", out);
  const gpu = await getGpuFn();
  const written = await exportFromRun(gpu, {
    run,
    task: given.task as string | undefined,
    z: given.z as string | undefined,
    out,
    format: given.format as ExportFormat | undefined,
    dataDir: given.dataDir as string | undefined,
    verify: given.verify as boolean | undefined,
  });
  console.log(`Wrote ${written.weights ?? written.onnx} and ${written.architecture}`);
}

async function runPredict(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
  paths: string[],
): Promise<void> {
  const { json, ...rest } = given;
  const options = { ...PREDICT_DEFAULTS, ...rest, paths } as PredictOptions;
  if (options.batch < 1) throw new UsageError("--batch must be at least 1");
  if (options.z !== undefined && options.task !== undefined) {
    throw new UsageError("--z and --task are exclusive: pass one");
  }
  const gpu = await getGpuFn();
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  const result = await predict(gpu, options, { onSkip: warnSkipped });
  const [, positive] = result.classNames;
  if (json) {
    for (const p of result.predictions) {
      console.log(JSON.stringify({
        file: p.file,
        probability: p.probability,
        class: p.className,
        label: p.label,
        logit: p.logit,
      }));
    }
  } else {
    const width = Math.max(4, ...result.predictions.map((p) => p.file.length));
    console.log(`${"file".padEnd(width)}  P(${positive})  class`);
    for (const p of result.predictions) {
      console.log(
        `${p.file.padEnd(width)}  ${
          p.probability.toFixed(4).padEnd(positive.length + 3)
        }  ${p.className}`,
      );
    }
  }
  console.error(
    `${result.predictions.length} picture(s) classified, ${result.skipped.length} skipped; ` +
      `task '${result.task}' (P is the probability of '${positive}')`,
  );
  if (result.predictions.length === 0) {
    throw new DataError("no usable picture among the files given; expected PNG or JPEG files");
  }
}

async function runTasks(
  _gpu: () => Promise<Gpu>,
  given: Record<string, unknown>,
): Promise<void> {
  const options = { ...TRAIN_DEFAULTS, ...given } as TrainOptions;
  const { dataset, family } = await loadTasks(options);
  const held = new Set(family.heldOut);
  const excluded = new Set(family.excluded);
  for (const [i, t] of family.tasks.entries()) {
    const mark = held.has(i) ? "held-out" : excluded.has(i) ? "excluded" : "train";
    console.log(`${String(i).padStart(5)}  ${mark.padEnd(9)} ${t.name}`);
  }
  console.log(
    `${family.tasks.length} tasks of ${options.family} on ${dataset.name}: ${family.train.length} train, ${family.heldOut.length} held out, ${family.excluded.length} excluded`,
  );
}

async function runExperimentCommand(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
  [name]: string[],
): Promise<void> {
  if (!(EXPERIMENTS as readonly string[]).includes(name ?? "")) {
    throw new UsageError(`unknown experiment '${name}'; expected ${EXPERIMENTS.join(" or ")}`);
  }
  const options = experimentOptions(name!, given);
  const present = (path: string) => Deno.stat(path).then(() => true, () => false);
  const held = await present(join(options.out, "results.json")) ||
    await present(join(options.out, "train", "checkpoint.json"));
  if (held && !options.resume && options.out !== `runs/${name}`) {
    throw new UsageError(
      `${options.out} already holds an experiment; pass --resume to keep what it finished ` +
        `(with the same options) or choose another --out`,
    );
  }
  const gpu = await getGpuFn();
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  const started = performance.now();
  const command = `deno task experiment ${name} ${Deno.args.slice(2).join(" ")}`.trim();
  // Ctrl-C stops at the next training step (saving a checkpoint) or before the next adaptation
  // phase; the same command with --resume goes on from there. A second Ctrl-C quits at once.
  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) Deno.exit(130);
    console.error("Stopping at the next training step or phase (Ctrl-C again quits now)");
    controller.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  let result;
  try {
    result = await runExperiment(gpu, options, {
      command,
      signal: controller.signal,
      onEvent: (e) => {
        if (!quiet) {
          console.error(`[${minutes((performance.now() - started) / 1000)}] ${e.text}`);
        }
      },
    });
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
  const report = await writeReport(options.out);
  console.log(verdict(result).map((line) => line.replaceAll("**", "")).join("\n\n"));
  console.log(`\nFinished in ${minutes(result.seconds)}; report ${report}`);
}

async function runFewShotCommand(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
): Promise<void> {
  const options = { ...FEWSHOT_DEFAULTS, ...given } as FewShotOptions;
  for (const k of ["trainings", "methods"] as const) {
    const list = options[k] as unknown as string[];
    if (list.length === 0) throw new UsageError(`--${k} needs at least one value`);
  }
  const gpu = await getGpuFn();
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
  const started = performance.now();
  const command = `deno task experiment fewshot ${Deno.args.slice(2).join(" ")}`.trim();
  const result = await runFewShot(gpu, options, {
    command,
    onEvent: (e) => {
      if (!quiet) console.error(`[${minutes((performance.now() - started) / 1000)}] ${e.text}`);
    },
  });
  const report = await writeFewShotReport(options.out);
  for (const r of result.rows) {
    console.log(
      `${r.method.padEnd(10)} ${r.ways}-way ${r.shots}-shot  ${(100 * r.accuracy).toFixed(2)}% ` +
        `± ${(100 * r.ci95).toFixed(2)}  (${r.episodes} episodes; lr ${r.chosen.lr}, ` +
        `${r.chosen.steps} steps)`,
    );
  }
  console.log(`\nFinished in ${minutes(result.seconds)}; report ${report}`);
}

/**
 * `experiment`'s options from flag values: training and adaptation flags go into `train` and
 * `adapt`, applied on top of the profile; the rest as given, over the defaults.
 */
function experimentOptions(name: string, given: Record<string, unknown>): ExperimentOptions {
  const plain: Record<string, unknown> = {};
  const train: Record<string, unknown> = {};
  const adapt: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(given)) {
    const f = EXPERIMENT_FLAGS.find((x) => x.key === key);
    const target = f?.into === "train" ? train : f?.into === "adapt" ? adapt : plain;
    target[f?.field ?? key] = value;
  }
  return {
    ...EXPERIMENT_DEFAULTS,
    out: `runs/${name}`,
    ...plain,
    name,
    ...(Object.keys(train).length ? { train: train as Partial<TrainOptions> } : {}),
    ...(Object.keys(adapt).length ? { adapt: adapt as Partial<AdaptOptions> } : {}),
  } as ExperimentOptions;
}

async function runReport(
  _gpu: () => Promise<Gpu>,
  given: Record<string, unknown>,
  _quiet: boolean,
  dirs: string[],
): Promise<void> {
  const sweeps = await Promise.all(dirs.map(isSweepDir));
  if (sweeps.some(Boolean)) {
    if (typeof given.out === "string" && dirs.length > 1) {
      throw new UsageError("--out with a sweep folder takes that one folder only");
    }
    for (const [i, dir] of dirs.entries()) {
      if (!sweeps[i]) {
        console.log(`Wrote ${await writeReport(dir)}`);
        continue;
      }
      const report = await writeSweepReport(dir, { out: given.out as string | undefined });
      console.log(`Sweep ${dir}: held-out test accuracy over seeds (95% CI: Student t)`);
      for (const line of report.table) console.log(`  ${line}`);
      if (report.notDone.length > 0) {
        console.log(`Not done, not counted: ${report.notDone.map((n) => n.cell.name).join(", ")}`);
      }
      console.log(`Wrote ${report.path}`);
    }
    return;
  }
  if (typeof given.out === "string") {
    console.log(`Wrote ${await combineReports(dirs, given.out)}`);
    return;
  }
  for (const dir of dirs) console.log(`Wrote ${await writeReport(dir)}`);
}

/** Shows a command line argument as a shell would need it, for messages. */
function shown(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

async function runSweepCommand(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
  [planPath]: string[],
): Promise<void> {
  if (typeof given.status === "string") {
    if (planPath) throw new UsageError("--status takes the sweep folder only; give no PLAN.json");
    await printSweepStatus(given.status);
    return;
  }
  if (!planPath) throw new UsageError("missing PLAN.json (or --status DIR)");
  const options = { ...SWEEP_DEFAULTS, ...given } as typeof SWEEP_DEFAULTS & {
    out?: string;
    dryRun?: boolean;
    force?: boolean;
    cell?: number;
    wait?: boolean;
  } & SlurmSettings;
  const plan = await loadPlan(planPath, {
    experiments: EXPERIMENTS,
    check: (key, value) => checkOption(EXPERIMENT_FLAGS.filter((f) => f.key !== "out"), key, value),
    listOptions: new Set(EXPERIMENT_FLAGS.filter((f) => f.kind === "ints").map((f) => f.key)),
  });
  const cells = expandCells(plan);
  const out = options.out ?? join("runs", basename(planPath).replace(/\.json$/, ""));
  const record: SweepRecord = { format: 1, plan: resolve(planPath), content: plan, cells };
  if (options.cell !== undefined) {
    await runSweepCell(getGpuFn, { dir: out, record }, {
      index: options.cell,
      force: Boolean(options.force),
      planPath,
      quiet,
    });
    return;
  }
  if (options.parallel < 1) throw new UsageError("--parallel must be at least 1");
  if (!(options.poll > 0)) throw new UsageError("--poll must be more than 0 seconds");
  const target = { dir: out, record };
  const before = await sweepStatus(target);
  const width = Math.max(4, ...cells.map((c) => c.name.length));
  console.log(`Sweep ${out}: ${cells.length} cell(s) from ${planPath}`);
  const fixed = Object.entries(plan.options).filter(([, v]) => v.length === 1);
  if (fixed.length > 0) {
    console.log(`  every cell: ${fixed.map(([k, v]) => `${k}=${JSON.stringify(v[0])}`).join(" ")}`);
  }
  for (const s of before) {
    const action = s.state === "done" && !options.force
      ? "skip (done)"
      : s.state === "running" || s.state === "queued"
      ? `leave (${s.state})`
      : "run";
    console.log(`  ${String(s.cell.index).padStart(3)}  ${s.cell.name.padEnd(width)}  ${action}`);
  }
  if (options.dryRun) {
    console.log("Dry run: nothing was started.");
    return;
  }
  await writeSweep(out, { path: planPath, content: plan, cells });
  const slurmSettings: SlurmSettings = { ...plan.slurm };
  for (const key of ["partition", "time", "cpus", "mem", "gres", "args"] as const) {
    if (given[key] !== undefined) (slurmSettings as Record<string, unknown>)[key] = given[key];
  }
  if (given.parallel !== undefined) slurmSettings.parallel = options.parallel;
  const backend = options.backend === "slurm"
    ? slurmBackend({
      ...slurmSettings,
      force: Boolean(options.force),
      wait: Boolean(options.wait),
      poll: options.poll,
    })
    : localBackend({ parallel: options.parallel, force: Boolean(options.force) });
  const started = performance.now();
  const stamp = () => `[${minutes((performance.now() - started) / 1000)}]`;
  const outcome = await runSweep(target, backend, {
    force: Boolean(options.force),
    onEvent: (e) => {
      if (e.kind === "submitted") {
        console.log(
          `Submitted Slurm array job ${e.jobId}: ${e.cells.length} cell(s), job script ${e.script}, logs ${
            join(out, "logs", `slurm-${e.jobId}_<cell>.log`)
          }`,
        );
      } else if (quiet) return;
      else if (e.kind === "start") {
        console.error(`${stamp()} cell ${e.cell.index} ${e.cell.name}: started, log ${e.log}`);
      } else if (e.kind === "end") {
        console.error(
          `${stamp()} cell ${e.cell.index} ${e.cell.name}: ${
            e.code === 0 ? "finished" : `failed (exit ${e.code})`
          }`,
        );
      } else if (e.kind === "queue") {
        const counts = Object.entries(e.counts).map(([k, v]) => `${v} ${k}`).join(", ");
        console.error(`${stamp()} Slurm job ${e.jobId}: ${counts || "not listed"}`);
      }
    },
  });
  if (outcome.launch && !outcome.launch.ended) {
    console.log(`Follow it with: deno task sweep --status ${shown(out)}`);
    return;
  }
  printStatusTable(outcome.status);
  if (outcome.busy.length > 0) {
    console.log(
      `Left alone (another process runs them): ${outcome.busy.map((c) => c.name).join(", ")}`,
    );
  }
  const failed = outcome.status.filter((s) => s.state === "failed");
  if (failed.length > 0) {
    throw new SweepError(
      `${failed.length} of ${cells.length} cell(s) failed: ${
        failed.map((s) => `${s.cell.name}${s.log ? ` (log ${s.log})` : ""}`).join(", ")
      }; the same command reruns them`,
    );
  }
  const done = outcome.status.filter((s) => s.state === "done").length;
  console.log(
    `${done} of ${cells.length} cell(s) done. Report: deno task report ${shown(out)}`,
  );
}

/** Runs one cell of a sweep in this process (what each job and each local worker runs). */
async function runSweepCell(
  getGpuFn: () => Promise<Gpu>,
  sweep: SweepTarget,
  options: { index: number; force: boolean; planPath: string; quiet: boolean },
): Promise<void> {
  const cells = sweep.record.cells;
  const cell = cells[options.index];
  if (!cell) {
    throw new UsageError(
      `--cell ${options.index}: the plan has ${cells.length} cell(s), numbered 0 to ${
        cells.length - 1
      }`,
    );
  }
  if (await isSweepDir(sweep.dir)) {
    const written = (await readSweep(sweep.dir)).cells[options.index];
    if (!written || !sameCell(written, cell)) {
      throw new SweepError(
        `${options.planPath} changed since ${
          join(sweep.dir, "sweep.json")
        } was written: cell ${options.index} is now '${cell.name}', there '${
          written?.name ?? "absent"
        }'; run the sweep again to resubmit`,
      );
    }
  } else {
    await writeSweep(sweep.dir, {
      path: options.planPath,
      content: sweep.record.content,
      cells,
    });
  }
  const arrayJob = Deno.env.get("SLURM_ARRAY_JOB_ID");
  const arrayTask = Deno.env.get("SLURM_ARRAY_TASK_ID");
  const slurmJob = arrayJob && arrayTask ? `${arrayJob}_${arrayTask}` : undefined;
  const log = Deno.env.get(LOG_ENV) ?? (slurmJob ? slurmLog(sweep.dir, slurmJob) : undefined);
  const started = performance.now();
  const outcome = await runCell(sweep.dir, cell, {
    force: options.force,
    log,
    slurmJob,
    onStop: (signal) => {
      console.error(`Cell ${cell.index} '${cell.name}' stopped by ${signal}; recorded as failed`);
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    },
    work: async (dir) => {
      const gpu = await getGpuFn();
      if (!options.quiet) {
        console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
      }
      // A cell stopped part-way (a time limit, a kill) goes on from what it finished; --force
      // starts it afresh.
      const experiment = {
        ...experimentOptions(cell.experiment, cell.values),
        out: dir,
        resume: !options.force,
      };
      await runExperiment(gpu, experiment, {
        command: `deno task sweep ${shown(options.planPath)} --out ${
          shown(sweep.dir)
        } --cell ${cell.index}`,
        onEvent: (e) => {
          if (!options.quiet) {
            console.error(`[${minutes((performance.now() - started) / 1000)}] ${e.text}`);
          }
        },
      });
      await writeReport(dir);
    },
  });
  console.log(
    outcome === "skipped"
      ? `Cell ${cell.index} '${cell.name}' is done; skipped (--force reruns it)`
      : `Cell ${cell.index} '${cell.name}' done in ${
        minutes((performance.now() - started) / 1000)
      }: ${join(sweep.dir, "cells", cell.name, "results.json")}`,
  );
}

function printStatusTable(status: CellStatus[]): void {
  const width = Math.max(4, ...status.map((s) => s.cell.name.length));
  for (const s of status) {
    console.log(
      `  ${String(s.cell.index).padStart(3)}  ${s.cell.name.padEnd(width)}  ${
        s.state.padEnd(7)
      }  ${s.detail}${s.state === "failed" && s.log ? ` (log ${s.log})` : ""}`,
    );
  }
  const count = (state: string) => status.filter((s) => s.state === state).length;
  const queued = count("queued");
  console.log(
    `${count("done")} done, ${count("running")} running, ${count("failed")} failed, ${
      count("missing")
    } missing${queued ? `, ${queued} queued` : ""}`,
  );
}

async function printSweepStatus(dir: string): Promise<void> {
  const record = await readSweep(dir);
  console.log(`Sweep ${dir}: ${record.cells.length} cell(s) from ${record.plan}`);
  printStatusTable(await sweepStatus({ dir, record }));
}

/** Runs the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const fewshot = args[0] === "experiment" && args[1] === "fewshot";
  const [name, ...rest] = fewshot ? ["experiment fewshot", ...args.slice(2)] : args;
  const cmd = fewshot ? FEWSHOT_COMMAND : name ? COMMANDS[name] : undefined;
  if (!cmd) {
    const list = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`);
    const text = `Usage: deno task <command> [flags]\n\nCommands:\n${list.join("\n")}`;
    if (name === undefined || name === "--help" || name === "help") {
      console.log(text);
      return name === undefined ? 2 : 0;
    }
    console.error(`error: unknown command '${name}'\n${text}`);
    return 2;
  }
  try {
    const { values, help, quiet, positionals } = await parseFlags(rest, {
      flags: cmd.flags,
      common: COMMON,
    });
    if (help) {
      console.log(usage(name!, { ...cmd, flags: [...cmd.flags, ...COMMON] }));
      return 0;
    }
    if (positionals.length > (cmd.positional ? (cmd.many ? Infinity : 1) : 0)) {
      throw new UsageError(`unexpected argument '${positionals.at(-1)}'`);
    }
    if (cmd.positional && !cmd.optional && positionals.length === 0) {
      throw new UsageError(`missing ${cmd.positional}`);
    }
    await cmd.run(getGpu, values, quiet, positionals);
    return 0;
  } catch (e) {
    for (const dir of created) await Deno.remove(dir).catch(() => {});
    if (e instanceof UsageError || e instanceof PlanError) {
      console.error(`error: ${e.message}\nRun 'deno task ${name} --help' for the flags.`);
      return 2;
    }
    const known = e instanceof DataError || e instanceof CheckpointError ||
      e instanceof SafetensorsError || e instanceof GpuUnavailableError ||
      e instanceof NonFiniteLossError || e instanceof RangeError || e instanceof ImageError ||
      e instanceof OutputError || e instanceof SweepError || e instanceof SlurmError ||
      e instanceof ExperimentError;
    if (known) {
      console.error(`error: ${(e as Error).message}`);
      return 1;
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotFound) {
      console.error(`error: ${(e as Error).message}`);
      return 1;
    }
    console.error(`error: ${(e as Error)?.message ?? e}`);
    if (Deno.env.get("SUPERNET_DEBUG")) console.error((e as Error)?.stack);
    else {console.error(
        "This looks like a bug; rerun with SUPERNET_DEBUG=1 for details and report it.",
      );}
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
