/**
 * The slot harness: T slots (tasks, starting points) trained side by side as one batched
 * program, each scored on its own images, stopped and restored at its own chosen point.
 *
 * @module
 */
import { type Augment, type ImageStore, type Slot, SlotSampler } from "../data/sampler.ts";
import type { Examples, TaskFamily } from "../data/tasks.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Dispatch } from "../gpu/kernel.ts";
import { read, write } from "../gpu/tensor.ts";
import { tunePending } from "../gpu/tune.ts";
import { Evaluator, type ForwardBuilder, mean, StepProgram } from "../engine.ts";
import type { ParamGroup } from "../optim.ts";
import { mixSeed } from "../random.ts";
import type { CurvePoint, Method } from "./options.ts";
import type { Context } from "./context.ts";
import type { Start } from "./starts.ts";
import type { TaskData } from "./tasks.ts";

/** One adaptation slot: which task (index into the call's tasks) and its starting z. */
export interface SlotSpec {
  data: TaskData;
  start?: Start;
}

/** A model prepared over T slots: its forward and the groups a step trains. */
export interface SlotModel {
  trainable: number;
  forward: ForwardBuilder;
  trainForward: ForwardBuilder;
  groups: ParamGroup[];
  regularize?: Dispatch[];
  destroy(): void;
}

/** How one slot ended. */
export interface SlotOutcome {
  point: CurvePoint;
  stepsRun: number;
  /** Images per step of each slot. */
  batch: number;
  selection?: number;
  curve: CurvePoint[];
}

/**
 * Trains T slots side by side and keeps, per slot, the point with the lowest validation loss, or
 * without a validation slice the last step (with its training loss, for tiny few-shot sets, to
 * rank the slots). Stops when every slot has gone `patience` evaluations without improving.
 * Leaves each slot's chosen values in its groups.
 */
export async function runSlots(
  ctx: Context,
  method: Method,
  options: {
    slots: SlotSpec[];
    model: SlotModel;
    steps: number;
    patience: number;
    select: boolean;
    /** Evaluate every this many steps (default: the options' `evalEvery`). */
    evalEvery?: number;
    /** Crops and flips of the learning images (none by default). */
    augment?: Augment;
  },
): Promise<SlotOutcome[]> {
  const { gpu, dataset, options: opts } = ctx;
  const { slots, model } = options;
  const T = slots.length;
  const virtual: TaskFamily = {
    name: "slots",
    tasks: slots.map((s) => ctx.family.tasks[s.data.task]!),
    heldOut: [],
    excluded: [],
    train: [],
  };
  const evalBatch = Math.max(16, Math.min(200, Math.floor(1600 / Math.min(T, 8))));
  // Full passes over each slot's own examples (test images, or the selection images).
  const passes = (store: ImageStore, split: "train" | "test", examples: Examples[]) =>
    new Evaluator(gpu, {
      dataset,
      family: virtual,
      tasks: [...slots.keys()],
      forward: model.forward,
      batch: evalBatch,
      tasksPerChunk: Math.min(T, 8),
      store,
      split,
      examples,
    });
  const test = passes(ctx.testStore, "test", slots.map((s) => s.data.test));
  const selectionSets = slots.map((s) =>
    s.data.validation ?? (s.data.learn.indices.length <= 400 ? s.data.learn : undefined)
  );
  const selecting = options.select && selectionSets.every((e) => e !== undefined);
  const selector = selecting
    ? passes(ctx.trainStore, "train", selectionSets as Examples[])
    : undefined;
  const stopEarly = selecting && options.patience > 0 && slots.every((s) => s.data.validation);
  const curves: CurvePoint[][] = slots.map(() => []);
  const best: { selection: number; step: number }[] = [];
  const chosen: Float32Array[][] = slots.map(() => []);
  const stale = new Array<number>(T).fill(0);
  let stepsRun = 0;
  const batch = slotBatch(opts.batch, slots);
  const evalEvery = options.evalEvery ?? opts.evalEvery;
  const evaluate = async (step: number): Promise<void> => {
    const scores = opts.curves ? await test.evaluate() : undefined;
    const picks = selector ? await selector.evaluate() : undefined;
    let improved = false;
    slots.forEach((slot, t) => {
      const s = scores?.[t];
      if (s) curves[t]!.push({ step, accuracy: s.accuracy, loss: s.loss });
      const selection = picks ? picks[t]!.loss : -step;
      // Without a validation slice the training images only rank the slots at their last step:
      // their loss is lowest where z has overshot (few-shot, measured on kept-out images), so it
      // must not choose the stopping point.
      // Such a slot needs no snapshot: its values at the end are its last step's.
      if (!slot.data.validation) {
        best[t] = { selection, step };
        stale[t] = 0;
      } else if (best[t] === undefined || selection < best[t]!.selection) {
        best[t] = { selection, step };
        stale[t] = 0;
        improved = true;
      } else stale[t]!++;
    });
    const shown = scores ?? picks;
    if (shown) {
      ctx.onEvent?.({
        kind: "eval",
        method,
        step,
        steps: options.steps,
        split: scores ? "test" : "validation",
        accuracy: mean(shown.map((s) => s.accuracy)),
        loss: mean(shown.map((s) => s.loss)),
      });
    }
    if (improved && model.groups.length > 0) {
      const values = await Promise.all(model.groups.map((g) => read(gpu, g.params.flat)));
      best.forEach((b, t) => {
        if (b.step === step && slots[t]!.data.validation) chosen[t] = values;
      });
    }
  };
  try {
    await evaluate(0);
    if (model.groups.length > 0 && options.steps > 0) {
      const sampler = new SlotSampler(gpu, dataset, {
        slots: slots.map((s, t): Slot => ({
          task: virtual.tasks[t]!,
          examples: s.data.learn,
          seed: mixSeed(opts.seed, s.data.task),
        })),
        batch,
        store: ctx.trainStore,
        balanced: true,
        augment: options.augment,
        seed: opts.seed,
      });
      const program = new StepProgram(gpu, {
        source: sampler,
        forward: model.trainForward,
        groups: model.groups,
        gradScale: T,
        regularize: model.regularize,
      });
      try {
        // Shape classes new to this adapter are timed once, before the first step, as in training.
        await tunePending(gpu);
        for (let step = 1; step <= options.steps; step++) {
          program.run(step);
          stepsRun = step;
          if (step % evalEvery !== 0 && step !== options.steps) continue;
          await evaluate(step);
          if (stopEarly && stale.every((s) => s >= options.patience)) break;
        }
      } finally {
        program.destroy();
        sampler.destroy();
      }
      await restoreChosen(gpu, model.groups, chosen, T);
    }
    // The test images score each slot once more, at its chosen point.
    const final = await test.evaluate();
    return slots.map((_, t) => ({
      point: { step: best[t]!.step, accuracy: final[t]!.accuracy, loss: final[t]!.loss },
      stepsRun,
      batch,
      selection: selecting ? best[t]!.selection : undefined,
      curve: curves[t]!,
    }));
  } finally {
    test.destroy();
    selector?.destroy();
  }
}

/** Images per step of every slot: the options' batch, at most the smallest slot's learning set. */
export function slotBatch(batch: number, slots: readonly SlotSpec[]): number {
  return Math.min(batch, Math.min(...slots.map((s) => s.data.learn.indices.length)));
}

/**
 * Writes back each slot's chosen values: for an arena whose tensors all lead with the slot
 * dimension T, slot t's rows come from its own snapshot; a slot without one (no validation
 * slice) keeps its current values, its last step's.
 */
export async function restoreChosen(
  gpu: Gpu,
  groups: ParamGroup[],
  chosen: Float32Array[][],
  T: number,
) {
  for (const [i, g] of groups.entries()) {
    const own = chosen.map((c) => c[i]);
    if (own.every((c) => c === undefined)) continue;
    if (T === 1) {
      write(gpu, g.params.flat, own[0]!);
      continue;
    }
    const merged = own.every((c) => c !== undefined)
      ? own[0]!.slice()
      : await read(gpu, g.params.flat);
    for (const { tensor } of g.params.entries) {
      if (tensor.shape[0] !== T) {
        throw new RangeError(`Slot values need tensors [${T}, ...], got [${tensor.shape}]`);
      }
      const per = tensor.size / T;
      const base = tensor.byteOffset / 4 - g.params.flat.byteOffset / 4;
      own.forEach((values, t) => {
        const from = base + t * per;
        if (values) merged.set(values.subarray(from, from + per), from);
      });
    }
    write(gpu, g.params.flat, merged);
  }
}

/** True when a network predicts one class for every test image: accuracy at a class share, loss >= ln 2. */
export function isCollapsed(point: CurvePoint, test: Examples): boolean {
  const positive = test.labels.reduce((a, b) => a + b, 0) / Math.max(1, test.labels.length);
  const atShare = Math.abs(point.accuracy - positive) < 0.005 ||
    Math.abs(point.accuracy - (1 - positive)) < 0.005;
  return atShare && point.loss >= Math.LN2 - 0.005;
}
