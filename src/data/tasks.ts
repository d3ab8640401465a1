/**
 * Task families: binary classification tasks built from a dataset's classes, with the tasks
 * held out of training for evaluation. Pure functions of the class names.
 *
 * @module
 */
import { mixSeed } from "../random.ts";
import type { Split } from "./split.ts";

/** A binary task: images of `negative` classes get label 0, of `positive` classes label 1. */
export interface Task {
  /** e.g. "cat vs dog" (negative vs positive). */
  name: string;
  /** Classes labelled 0. */
  negative: number[];
  /** Classes labelled 1. */
  positive: number[];
}

/** A family of tasks and how it is split between training and evaluation. */
export interface TaskFamily {
  /** One of {@link FAMILIES}. */
  name: string;
  /** Every task, in a fixed order; tasks are referred to by their index here. */
  tasks: Task[];
  /** Tasks held out of training, to evaluate generalisation to new tasks. */
  heldOut: number[];
  /**
   * Tasks neither trained on nor held out: in all_pairs, the reversed twin (j, i) of each
   * held-out task (i, j), so that no held-out class pair is seen in training in either order.
   */
  excluded: number[];
  /**
   * Validation tasks: kept out of training like the held-out ones, to choose the adaptation
   * recipe on (never scored as results). Absent in runs from before they existed.
   */
  validation?: number[];
  /** Tasks used in training: all tasks except `heldOut`, `validation` and `excluded`, in order. */
  train: number[];
}

/** Names of the families `makeFamily` builds. */
export const FAMILIES = ["one_vs_anchor", "pairs_reversed", "all_pairs"] as const;

/** One of {@link FAMILIES}. */
export type FamilyName = typeof FAMILIES[number];

/** Which tasks to hold out. */
export interface HoldoutOptions {
  /** Hold out the last `holdoutLast` tasks (default 1; ignored when `holdout` is given). */
  holdoutLast?: number;
  /** Hold out exactly these task indices. */
  holdout?: number[];
  /**
   * Keep this many more tasks out of training as validation tasks (default 0): the last ones
   * before the held-out tasks that training would otherwise use.
   */
  validationTasks?: number;
}

function pair(classNames: readonly string[], negative: number, positive: number): Task {
  return {
    name: `${classNames[negative]} vs ${classNames[positive]}`,
    negative: [negative],
    positive: [positive],
  };
}

/**
 * Builds a task family over `classNames` (n classes):
 * - one_vs_anchor: the anchor is the last class; task i is class i (negative) vs the anchor
 *   (positive), for i = 0 .. n-2.
 * - pairs_reversed: pairs (i, i + n/2) for i < n/2 (n/2 rounded down; with odd n the last
 *   class is unused), then each pair again reversed. The default held-out task is the last,
 *   the reversed twin of the last pair, whose forward twin stays in training.
 * - all_pairs: every ordered pair (i, j), i != j, row by row. Holding out (i, j) also puts
 *   (j, i) in `excluded`, so the pair is never seen in training in either order.
 * The default held-out set is the last task; `holdout` or `holdoutLast` choose others.
 * `validationTasks` keeps the last that many of the remaining tasks out of training too (in
 * all_pairs with their reversed twins excluded, as for held-out tasks).
 */
export function makeFamily(
  name: string,
  classNames: readonly string[],
  options: HoldoutOptions = {},
): TaskFamily {
  const n = classNames.length;
  if (n < 2) throw new RangeError(`Task families need at least 2 classes, got ${n}`);
  const tasks: Task[] = [];
  if (name === "one_vs_anchor") {
    for (let i = 0; i < n - 1; i++) tasks.push(pair(classNames, i, n - 1));
  } else if (name === "pairs_reversed") {
    const half = Math.floor(n / 2);
    for (let i = 0; i < half; i++) tasks.push(pair(classNames, i, i + half));
    for (let i = 0; i < half; i++) tasks.push(pair(classNames, i + half, i));
  } else if (name === "all_pairs") {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) if (i !== j) tasks.push(pair(classNames, i, j));
    }
  } else {
    throw new RangeError(`Unknown task family '${name}': expected one of ${FAMILIES.join(", ")}`);
  }
  const heldOut = chooseHeldOut(tasks.length, options);
  const excluded: number[] = [];
  // In all_pairs a kept-out task's reversed twin leaves training too: the pair is new either way.
  const excludeTwin = (h: number, kept: number[]) => {
    if (name !== "all_pairs") return;
    const task = tasks[h]!;
    const twin = tasks.findIndex((t) =>
      t.negative[0] === task.positive[0] && t.positive[0] === task.negative[0]
    );
    if (!kept.includes(twin) && !excluded.includes(twin)) excluded.push(twin);
  };
  for (const h of heldOut) excludeTwin(h, heldOut);
  const validation: number[] = [];
  const wanted = options.validationTasks ?? 0;
  if (!Number.isInteger(wanted) || wanted < 0) {
    throw new RangeError(`validationTasks must be a whole number >= 0, got ${wanted}`);
  }
  for (let i = tasks.length - 1; i >= 0 && validation.length < wanted; i--) {
    if (heldOut.includes(i) || excluded.includes(i)) continue;
    validation.unshift(i);
    excludeTwin(i, [...heldOut, ...validation]);
  }
  excluded.sort((a, b) => a - b);
  const train = [...tasks.keys()].filter((i) =>
    !heldOut.includes(i) && !excluded.includes(i) && !validation.includes(i)
  );
  if (train.length === 0 || validation.length < wanted) {
    throw new RangeError(
      `Family ${name} of ${tasks.length} tasks has none left for training after holding out ` +
        `[${heldOut}]${wanted > 0 ? ` and ${wanted} validation task(s)` : ""}; hold out fewer`,
    );
  }
  return { name, tasks, heldOut, excluded, ...(wanted > 0 ? { validation } : {}), train };
}

function chooseHeldOut(count: number, options: HoldoutOptions): number[] {
  if (options.holdout) {
    const seen = new Set<number>();
    for (const h of options.holdout) {
      if (!Number.isInteger(h) || h < 0 || h >= count || seen.has(h)) {
        throw new RangeError(
          `Held-out task ${h} is invalid: expected distinct task indices in 0..${count - 1}`,
        );
      }
      seen.add(h);
    }
    return [...options.holdout].sort((a, b) => a - b);
  }
  const last = options.holdoutLast ?? 1;
  if (!Number.isInteger(last) || last < 0 || last >= count) {
    throw new RangeError(
      `holdoutLast must be an integer in 0..${count - 1} for ${count} tasks, got ${last}`,
    );
  }
  return Array.from({ length: last }, (_, k) => count - last + k);
}

/** Images of one task in one split, with their binary labels. */
export interface Examples {
  /** Image indices into the split, ascending. */
  indices: Uint32Array;
  /** 0 (negative) or 1 (positive), per image. */
  labels: Float32Array;
}

/**
 * True for the training images a run keeps out of training (its reserve): a fixed hash of the
 * image index below `fraction`, so every run, seed and task family reserves the same images of a
 * dataset, about `fraction` of each class. A held-out task's validation slice is drawn from them,
 * so that choosing a stopping step or a start never scores images the generator was trained on.
 */
export function isReserved(index: number, fraction: number): boolean {
  if (!(fraction > 0)) return false;
  return mixSeed(0x5e5e7e, index) / 2 ** 32 < fraction;
}

/** The examples at positions k (into `examples`) for which `keep(k)` holds, in order. */
export function selectExamples(examples: Examples, keep: (k: number) => boolean): Examples {
  const ks = [...examples.indices.keys()].filter(keep);
  return {
    indices: Uint32Array.from(ks, (k) => examples.indices[k]!),
    labels: Float32Array.from(ks, (k) => examples.labels[k]!),
  };
}

/** `examples` split by `isReserved`: the images training may use, and the reserved ones. */
export function splitReserve(
  examples: Examples,
  fraction: number,
): { kept: Examples; reserved: Examples } {
  const reserved = examples.indices.map((i) => (isReserved(i, fraction) ? 1 : 0));
  return {
    kept: selectExamples(examples, (k) => reserved[k] === 0),
    reserved: selectExamples(examples, (k) => reserved[k] === 1),
  };
}

/**
 * The images of a task's classes in `split` (ascending index order) and their binary labels;
 * throws a RangeError if the task is malformed (a class on both sides, or a side empty).
 */
export function taskExamples(task: Task, split: Split): Examples {
  const side = new Map<number, number>();
  for (const c of task.negative) side.set(c, 0);
  for (const c of task.positive) {
    if (side.has(c)) throw new RangeError(`Task '${task.name}' has class ${c} on both sides`);
    side.set(c, 1);
  }
  if (task.negative.length === 0 || task.positive.length === 0) {
    throw new RangeError(`Task '${task.name}' needs at least one negative and one positive class`);
  }
  let count = 0;
  for (let i = 0; i < split.count; i++) if (side.has(split.labels[i]!)) count++;
  const indices = new Uint32Array(count);
  const labels = new Float32Array(count);
  for (let i = 0, k = 0; i < split.count; i++) {
    const s = side.get(split.labels[i]!);
    if (s === undefined) continue;
    indices[k] = i;
    labels[k++] = s;
  }
  return { indices, labels };
}
