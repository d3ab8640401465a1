/**
 * `deno task tasks`: lists a family's tasks with their class names and held-out marks.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { loadTasks, TRAIN_DEFAULTS, type TrainOptions } from "../train.ts";
import { type Command, TASK_FLAGS } from "./command.ts";

/** `tasks`: a family's tasks, as `train` would split them. */
export const TASKS_COMMAND: Command = {
  summary: "list a family's tasks with class names and held-out marks",
  flags: TASK_FLAGS,
  defaults: TRAIN_DEFAULTS,
  run: runTasks,
};

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
