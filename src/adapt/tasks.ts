/**
 * Which tasks an `adapt` call learns, and the images each learns from, validates on and is
 * scored on.
 *
 * @module
 */
import {
  type Examples,
  selectExamples,
  splitReserve,
  type Task,
  type TaskFamily,
} from "../data/tasks.ts";
import { mixSeed, Random } from "../random.ts";
import type { AdaptOptions } from "./options.ts";

/** Finds a task by index or name. */
export function resolveTask(family: TaskFamily, task: string | undefined): number {
  if (task === undefined) {
    const first = family.heldOut[0];
    if (first === undefined) throw new RangeError(`The run holds out no task; pass --task`);
    return first;
  }
  if (/^\d+$/.test(task)) {
    const index = Number(task);
    if (index < family.tasks.length) return index;
  }
  const byName = family.tasks.findIndex((t) => t.name === task);
  if (byName < 0) {
    throw new RangeError(
      `Unknown task '${task}': expected an index 0..${family.tasks.length - 1} or a name such as '${
        family.tasks[0]?.name
      }' (see 'deno task tasks')`,
    );
  }
  return byName;
}

/** Resolves `--task`: one task, a comma list, or `all-heldout`. */
export function resolveTasks(family: TaskFamily, task: string | undefined): number[] {
  if (task === "all-heldout") {
    if (family.heldOut.length === 0) throw new RangeError(`The run holds out no task; pass --task`);
    return [...family.heldOut];
  }
  if (task === undefined || !task.includes(",")) return [resolveTask(family, task)];
  const tasks = task.split(",").map((t) => resolveTask(family, t.trim()));
  if (new Set(tasks).size !== tasks.length) {
    throw new RangeError(`--task '${task}' names a task twice; name each task once`);
  }
  return tasks;
}

/** The learning and validation examples of one task. */
export interface TaskData {
  task: number;
  learn: Examples;
  validation?: Examples;
  test: Examples;
}

/**
 * Splits a task's training examples (or its few-shot subset) into the ones to learn from and a
 * validation slice. From a run trained with a reserve (`reserve` > 0), the slice is the reserved
 * images (`isReserved`), which the generator never saw; otherwise `fraction` of each class,
 * chosen by a seeded shuffle. No slice when `fraction` is 0 or a class would get fewer than 10.
 */
export function splitValidation(
  examples: Examples,
  options: { fraction: number; seed: number; reserve?: number },
): { learn: Examples; validation?: Examples } {
  if (!(options.fraction > 0)) return { learn: examples };
  if (options.reserve && options.reserve > 0) {
    const { kept, reserved } = splitReserve(examples, options.reserve);
    if (sideCounts(reserved).some((n) => n < 10)) return { learn: examples };
    return { learn: kept, validation: reserved };
  }
  if (sideCounts(examples).some((n) => n < 10)) return { learn: examples };
  const { kept, carved } = carvePerSide(examples, {
    seed: mixSeed(options.seed, 0x7a11),
    size: (n) => Math.max(1, Math.round(n * options.fraction)),
  });
  return { learn: kept, validation: carved };
}

/** Images of label 0 and of label 1. */
export function sideCounts(examples: Examples): [number, number] {
  const positives = examples.labels.reduce((n, l) => n + (l > 0.5 ? 1 : 0), 0);
  return [examples.labels.length - positives, positives];
}

/**
 * Carves `size(n)` images out of each side (label 0, label 1) of n images, chosen by a shuffle
 * seeded with `seed`; the rest are kept. Both keep ascending image order.
 */
export function carvePerSide(
  examples: Examples,
  options: { seed: number; size: (n: number) => number },
): { kept: Examples; carved: Examples } {
  const bySide: number[][] = [[], []];
  examples.labels.forEach((l, k) => bySide[l > 0.5 ? 1 : 0]!.push(k));
  const random = new Random(options.seed);
  const carved = new Set<number>();
  for (const ks of bySide) {
    random.shuffle(ks);
    for (const k of ks.slice(0, options.size(ks.length))) carved.add(k);
  }
  return {
    kept: selectExamples(examples, (k) => !carved.has(k)),
    carved: selectExamples(examples, (k) => carved.has(k)),
  };
}

/** A custom task borrows the first held-out row, or row 0 when the run holds none out. */
export function customRow(family: TaskFamily, options: AdaptOptions): string | undefined {
  if (!options.custom) return undefined;
  return String(family.heldOut[0] ?? 0);
}

/** Names of a task's label 0 and label 1, e.g. ["cat", "dog"] ("a+b" when a side has several). */
export function sideNames(task: Task, classNames: readonly string[]): [string, string] {
  const side = (classes: number[]) => classes.map((c) => classNames[c] ?? String(c)).join("+");
  return [side(task.negative), side(task.positive)];
}
