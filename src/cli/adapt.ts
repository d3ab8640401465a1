/**
 * `deno task adapt`: its flags, and the run that learns a held-out task (or the user's pictures)
 * by z against the whole-network baselines, printing a table per task.
 *
 * @module
 */
import { join } from "node:path";
import {
  adapt,
  ADAPT_DEFAULTS,
  type AdaptOptions,
  METHODS,
  SEED_ADAPT_PRESET,
  type TaskAdaptResult,
  Z_INITS,
} from "../adapt/mod.ts";
import { RECIPE_FILE, runRecipe } from "../adapt/recipe.ts";
import { loadCheckpoint } from "../checkpoint.ts";
import type { Gpu } from "../gpu/device.ts";
import { imageTask, type ImageTaskOptions } from "../image_task.ts";
import { OPTIMIZERS } from "../optim.ts";
import {
  type Command,
  DATA_FLAGS,
  outputFolder,
  PICTURE_FLAGS,
  printAdapter,
  progress,
  warnSkipped,
} from "./command.ts";
import { type Flag, flagName, UsageError } from "./flags.ts";

/** The flags of `adapt`; `experiment` takes some of them too (EXPERIMENT_FLAGS). */
export const ADAPT_FLAGS: Flag[] = [
  { flag: "run", key: "run", kind: "string", help: "run folder written by train" },
  { flag: "task", key: "task", kind: "string", help: "task index or name (default held-out)" },
  { flag: "methods", key: "methods", kind: "string", help: `comma list of ${METHODS.join(",")}` },
  { flag: "init", key: "init", kind: "string", values: Z_INITS, help: "initial z" },
  { flag: "population", key: "population", kind: "int", help: "K trained z beside the mean z" },
  {
    flag: "steps",
    key: "steps",
    kind: "int",
    help: "most steps of every method (full: see --full-epochs)",
  },
  {
    flag: "z-steps",
    key: "zSteps",
    kind: "int",
    help: "steps of z (default: the run's recipe, else --steps)",
  },
  {
    flag: "recipe",
    key: "recipe",
    kind: "string",
    values: ["run", "defaults"],
    help: "z's start, lr, steps and prior: the recipe the run chose on its validation tasks " +
      "(run; the built-in defaults where it has none) or the built-in defaults",
  },
  { flag: "batch", key: "batch", kind: "int", help: "images per step" },
  { flag: "shots", key: "shots", kind: "int", help: "images per class (0: all)" },
  { flag: "lr", key: "lr", kind: "number", help: "learning rate of z (0: 0.1 x z spread)" },
  { flag: "full-lr", key: "fullLr", kind: "number", help: "learning rate of full" },
  { flag: "head-lr", key: "headLr", kind: "number", help: "learning rate of head" },
  { flag: "finetune-lr", key: "finetuneLr", kind: "number", help: "learning rate of finetune" },
  { flag: "no-lr-grid", key: "lrGrid", kind: "bool", help: "baselines skip the lr grid" },
  {
    flag: "full-epochs",
    key: "fullEpochs",
    kind: "int",
    help: "budget of full in epochs of the task's images, at least --steps, early stopping " +
      "on the validation slice (0: --steps)",
  },
  {
    flag: "full-weight-decay",
    key: "fullWeightDecay",
    kind: "numbers",
    help: "weight decays of full (AdamW), chosen with its lr on the validation slice",
  },
  {
    flag: "no-full-augment",
    key: "fullAugment",
    kind: "bool",
    help: "full trains without random crops (and flips, for photographs)",
  },
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

/** `adapt`: learns a held-out task by its z only, against whole-network baselines. */
export const ADAPT_COMMAND: Command = {
  summary: "learn a held-out task by its z only, against whole-network baselines",
  flags: ADAPT_FLAGS,
  defaults: ADAPT_DEFAULTS,
  run: runAdapt,
};

function adaptTable(result: TaskAdaptResult, scored = "test"): string {
  const rows = [
    [
      "method",
      "trainable",
      `${scored} acc`,
      `${scored} loss`,
      "steps",
      "lr",
      "images",
      "seconds",
      "note",
    ],
    ...result.results.map((r) => [
      r.method,
      r.trainable.toLocaleString("en"),
      `${(100 * r.accuracy).toFixed(2)}%`,
      r.loss.toFixed(4),
      `${r.steps}/${r.stepsRun}`,
      r.trainable > 0 ? r.lr.toPrecision(2) : "-",
      // Images the chosen run drew, and with a grid or population all runs together.
      r.imagesSeen === undefined
        ? "-"
        : r.searchImages !== undefined && r.searchImages !== r.imagesSeen
        ? `${r.imagesSeen.toLocaleString("en")} / ${r.searchImages.toLocaleString("en")}`
        : r.imagesSeen.toLocaleString("en"),
      r.seconds.toFixed(1),
      [
        r.weightDecay ? `weight decay ${r.weightDecay}` : "",
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
  const { images, testDir, positive, fit, strict, preset, recipe: use, ...rest } = given as
    & Record<string, unknown>
    & Partial<ImageTaskOptions>;
  // The run's recipe (chosen on its validation tasks) replaces the built-in z defaults; the
  // seed's preset and every flag given override it.
  const run = (rest.run as string | undefined) ?? ADAPT_DEFAULTS.run;
  const recipe = use === "defaults" ? undefined : await runRecipe(run);
  const options = {
    ...ADAPT_DEFAULTS,
    ...recipe,
    ...(preset === "seed" ? SEED_ADAPT_PRESET : {}),
    ...rest,
  } as AdaptOptions;
  if (recipe && !quiet) {
    console.error(
      `Recipe of ${run} (chosen on its validation tasks, ${RECIPE_FILE}): start ${recipe.init}, ` +
        `lr ${recipe.lr?.toPrecision(2)}, ${recipe.zSteps} steps, prior ${recipe.prior}` +
        (preset === "seed" ? "; --preset seed overrides it" : ""),
    );
  }
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
  printAdapter(gpu, quiet);
  const p = progress(quiet);
  const result = await adapt(gpu, options, {
    onEvent: (e) => {
      if (e.kind === "method") {
        p.done();
        p.line(
          `${e.method}: ${e.trainable.toLocaleString("en")} trainable numbers, ${e.slots} slot(s)` +
            (e.trainable > 0 ? `, lr ${e.lr.toPrecision(2)}` : "") +
            (e.weightDecay !== undefined ? `, weight decay ${e.weightDecay}` : "") +
            (e.trainable > 0 && e.steps !== undefined ? `, up to ${e.steps} steps` : ""),
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
