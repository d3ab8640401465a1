/**
 * `deno task train`: its flags, and the run that trains a generator and prints its progress.
 *
 * @module
 */
import { join } from "node:path";
import { loadCheckpoint } from "../checkpoint.ts";
import { TARGETS } from "../model/target.ts";
import { OPTIMIZERS, SCHEDULES } from "../optim.ts";
import { ADAPT_DEFAULTS } from "../adapt/mod.ts";
import { chooseRecipe, RECIPE_FILE } from "../adapt/recipe.ts";
import {
  type RunState,
  SEED_TRAIN_PRESET,
  train,
  TRAIN_DEFAULTS,
  type TrainEvent,
  type TrainOptions,
} from "../train.ts";
import type { Gpu } from "../gpu/device.ts";
import {
  type Command,
  minutes,
  outputFolder,
  printAdapter,
  progress,
  TASK_FLAGS,
} from "./command.ts";
import { type Flag, UsageError } from "./flags.ts";

/** The flags of `train`; `experiment` takes most of them too (EXPERIMENT_FLAGS). */
export const TRAIN_FLAGS: Flag[] = [
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
  {
    flag: "validation-tasks",
    key: "validationTasks",
    kind: "int",
    help: "tasks kept out of training to choose the adaptation recipe on (default: up to 10 " +
      "where a class has under 100 training images, else 0)",
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

/** `train`: trains the generator and task vectors on a task family. */
export const TRAIN_COMMAND: Command = {
  summary: "train the generator and task vectors on a task family",
  flags: TRAIN_FLAGS,
  defaults: TRAIN_DEFAULTS,
  run: runTrain,
};

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
  printAdapter(gpu, quiet);
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
    const { info } = await loadCheckpoint<TrainOptions>(options.out, []);
    const validation = (info.state as unknown as RunState).family.validation ?? [];
    if (validation.length > 0) {
      p.line(`Choosing the adaptation recipe on ${validation.length} validation tasks`);
      const choice = await chooseRecipe(gpu, {
        run: options.out,
        steps: ADAPT_DEFAULTS.steps,
        evalEvery: ADAPT_DEFAULTS.evalEvery,
        batch: ADAPT_DEFAULTS.batch,
        seed: options.seed,
        dataDir: options.dataDir,
        verify: options.verify,
      }, { onEvent: (e) => p.line(`Recipe candidate ${e.index + 1}: ${e.name}`) });
      p.done();
      const won = choice.chosenScore;
      console.log(
        `Adaptation recipe: ${choice.chosen.name}, ${choice.chosen.zSteps} steps (validation ` +
          `loss ${won.loss.toFixed(4)}; built-in defaults ${choice.defaults.loss.toFixed(4)}, ` +
          `the seed's recipe ${choice.seedRecipe.loss.toFixed(4)}); adapt uses it: ` +
          `${join(options.out, RECIPE_FILE)}`,
      );
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

/** A run folder that holds a checkpoint is not replaced, except the default runs/latest. */
async function refuseToOverwrite(out: string): Promise<void> {
  const exists = await Deno.stat(join(out, "checkpoint.json")).then(() => true, () => false);
  if (exists && out !== TRAIN_DEFAULTS.out) {
    throw new UsageError(
      `${out} already holds a run; pass --resume to continue it or choose another --out`,
    );
  }
}
