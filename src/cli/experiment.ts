/**
 * `deno task experiment`: exp1 and exp2 end to end (training and adaptation flags on top of a
 * profile), and `experiment fewshot` (N-way episodes), each with its flags and its run.
 *
 * @module
 */
import { join } from "node:path";
import type { AdaptOptions } from "../adapt/mod.ts";
import { BASELINE_FILE, runBaseline } from "../baseline.ts";
import { DATASETS } from "../data/dataset.ts";
import { FAMILIES } from "../data/tasks.ts";
import {
  EXPERIMENT_DEFAULTS,
  type ExperimentOptions,
  EXPERIMENTS,
  PROFILES,
  runExperiment,
} from "../experiment.ts";
import {
  FEWSHOT_DEFAULTS,
  FEWSHOT_METHODS,
  FEWSHOT_PROFILES,
  type FewShotOptions,
  runFewShot,
  TRAININGS,
} from "../fewshot/experiment.ts";
import { writeFewShotReport } from "../fewshot/report.ts";
import { SPLITS } from "../fewshot/split.ts";
import type { Gpu } from "../gpu/device.ts";
import { TARGETS } from "../model/target.ts";
import { verdict, writeReport } from "../report.ts";
import type { TrainOptions } from "../train.ts";
import { ADAPT_FLAGS } from "./adapt.ts";
import { type Command, DATA_FLAGS, minutes, printAdapter } from "./command.ts";
import { type Flag, UsageError } from "./flags.ts";
import { TRAIN_FLAGS } from "./train.ts";

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
    "validation-tasks",
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
    "full-epochs",
    "full-weight-decay",
    "no-full-augment",
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

/**
 * The flags of `experiment`: its own, then the training and adaptation flags applied on top of
 * the profile (what a sweep plan's options may set too).
 */
export const EXPERIMENT_FLAGS: Flag[] = [
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
  {
    flag: "baseline",
    key: "baseline",
    kind: "bool",
    help: "only re-measure the whole network (full) on the held-out tasks with today's budget, " +
      "without training the generator; writes baseline.json into --out, which report pairs " +
      "with the results.json of the same options there",
  },
  ...EXPERIMENT_TRAIN_FLAGS,
  ...EXPERIMENT_ADAPT_FLAGS,
];

/** `experiment exp1|exp2`: an experiment end to end with its controls and ablations. */
export const EXPERIMENT_COMMAND: Command = {
  summary: "run the seed's exp1 or exp2 end to end with controls and ablations",
  flags: EXPERIMENT_FLAGS,
  defaults: EXPERIMENT_DEFAULTS,
  note: "Training and adaptation flags override the profile's settings.",
  positional: "exp1|exp2 (fewshot: see 'deno task experiment fewshot --help')",
  run: runExperimentCommand,
};

/** The flags of `experiment fewshot`, one per {@link FewShotOptions} field. */
export const FEWSHOT_FLAGS: Flag[] = [
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
  {
    flag: "resume",
    key: "resume",
    kind: "bool",
    help: "keep the trainings and rows an earlier run of these options finished in --out",
  },
];

/** `experiment fewshot`: its own flags (N-way episodes), dispatched from `experiment`. */
export const FEWSHOT_COMMAND: Command = {
  summary: "N-way K-shot episodes of classes never seen in training, every method alike",
  flags: FEWSHOT_FLAGS,
  defaults: FEWSHOT_DEFAULTS,
  run: runFewShotCommand,
};

/** Whether a file or folder exists. */
function present(path: string): Promise<boolean> {
  return Deno.stat(path).then(() => true, () => false);
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
  if (options.baseline) return await runBaselineCommand(getGpuFn, options, quiet);
  const held = await present(join(options.out, "results.json")) ||
    await present(join(options.out, "train", "checkpoint.json"));
  if (held && !options.resume && options.out !== `runs/${name}`) {
    throw new UsageError(
      `${options.out} already holds an experiment; pass --resume to keep what it finished ` +
        `(with the same options) or choose another --out`,
    );
  }
  const gpu = await getGpuFn();
  printAdapter(gpu, quiet);
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

/** `experiment --baseline`: the whole network alone, written beside the experiment's results. */
async function runBaselineCommand(
  getGpuFn: () => Promise<Gpu>,
  options: ExperimentOptions,
  quiet: boolean,
): Promise<void> {
  const file = join(options.out, BASELINE_FILE);
  if (await present(file)) {
    throw new UsageError(
      `${file} already exists; move it away to measure the baseline again, or choose another --out`,
    );
  }
  const gpu = await getGpuFn();
  printAdapter(gpu, quiet);
  const started = performance.now();
  const command = `deno task experiment ${options.name} ${Deno.args.slice(2).join(" ")}`.trim();
  const result = await runBaseline(gpu, options, {
    command,
    onEvent: (e) => {
      if (!quiet) console.error(`[${minutes((performance.now() - started) / 1000)}] ${e.text}`);
    },
  });
  for (const h of result.heldOut) {
    const f = h.full;
    console.log(
      `full  ${h.name.padEnd(24)} ${(100 * f.accuracy).toFixed(2)}%  loss ${f.loss.toFixed(4)}  ` +
        `lr ${(f.lr ?? 0).toPrecision(2)}, weight decay ${f.weightDecay ?? 0}, ` +
        `step ${f.steps} of ${f.stepsRun ?? f.steps}, ${
          (f.imagesSeen ?? 0).toLocaleString("en")
        } images`,
    );
  }
  console.log(`\nFinished in ${minutes(result.seconds)}; results in ${file}`);
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
  const held = await present(join(options.out, "results.json")) ||
    await present(join(options.out, "rows.json"));
  if (held && !options.resume && options.out !== FEWSHOT_DEFAULTS.out) {
    throw new UsageError(
      `${options.out} already holds a few-shot run; pass --resume to keep what it finished ` +
        `(with the same options) or choose another --out`,
    );
  }
  const gpu = await getGpuFn();
  printAdapter(gpu, quiet);
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
export function experimentOptions(name: string, given: Record<string, unknown>): ExperimentOptions {
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
