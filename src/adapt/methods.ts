/**
 * One method on every task of a call: the z methods' models (z only, the seed's recipe, through
 * an untrained generator, zero-shot), the baselines over their learning-rate grid, and the winner
 * per task among its slots.
 *
 * @module
 */
import { restoreArenas } from "../checkpoint.ts";
import type { Augment } from "../data/sampler.ts";
import { type Dataset, mirrorKeepsClass } from "../data/split.ts";
import { mean } from "../engine.ts";
import { read, tensorFrom, write } from "../gpu/tensor.ts";
import { initTaskVectors, SuperNet } from "../model/supernet.ts";
import { axpby } from "../ops/elementwise.ts";
import { optimizerConfig, ParamGroup } from "../optim.ts";
import { type AdaptOptions, type Method, type MethodResult, SEED_ADAPT_PRESET } from "./options.ts";
import { baselineModel, measureForgetting } from "./baselines.ts";
import type { Context } from "./context.ts";
import {
  isCollapsed,
  runSlots,
  slotBatch,
  type SlotModel,
  type SlotOutcome,
  type SlotSpec,
} from "./slots.ts";
import { type Start, trainedZStats } from "./starts.ts";
import type { TaskData } from "./tasks.ts";

/** One method's result on one task, and (z methods) the winning z. */
export interface TaskOutcome {
  result: MethodResult;
  z?: Float32Array;
}

/** Runs one method on every task (batched where the method allows) and picks each winner. */
export async function runMethod(
  ctx: Context,
  method: Method,
  options: { data: TaskData[]; starts: Start[][] },
): Promise<TaskOutcome[]> {
  const { data, starts } = options;
  const opts = ctx.options;
  const started = performance.now();
  const d = ctx.state.model.generator.zDim;
  const stats = trainedZStats(ctx.family, ctx.table, d);
  const zLr = opts.lr > 0 ? opts.lr : 0.1 * stats.spread;
  const finish = (
    outcomes: {
      slot: SlotSpec;
      outcome: SlotOutcome;
      lr: number;
      weightDecay?: number;
      trainable: number;
      z?: Float32Array;
    }[],
  ): TaskOutcome[] =>
    data.map((td) => {
      // The task's winner among its slots (starting points, learning rates) by selection loss.
      const mine = outcomes.filter((o) => o.slot.data === td);
      const win = mine.reduce((a, b) =>
        (b.outcome.selection ?? 0) < (a.outcome.selection ?? 0) ? b : a
      );
      return {
        result: {
          method,
          trainable: win.trainable,
          accuracy: win.outcome.point.accuracy,
          loss: win.outcome.point.loss,
          steps: win.outcome.point.step,
          stepsRun: win.outcome.stepsRun,
          seconds: (performance.now() - started) / 1000 / data.length,
          lr: win.lr,
          ...(win.weightDecay !== undefined ? { weightDecay: win.weightDecay } : {}),
          imagesSeen: win.outcome.stepsRun * win.outcome.batch,
          searchImages: mine.reduce((n, o) => n + o.outcome.stepsRun * o.outcome.batch, 0),
          ...(win.slot.start && method !== "full" ? { start: win.slot.start.label } : {}),
          ...(win.outcome.selection !== undefined && td.validation
            ? { validationLoss: win.outcome.selection }
            : {}),
          collapsed: isCollapsed(win.outcome.point, td.test),
          curve: win.outcome.curve,
        },
        z: win.z,
      };
    });

  if (method === "zero-shot" || method === "z" || method === "z-seed" || method === "z-untrained") {
    const seedRecipe = method === "z-seed";
    const slots: SlotSpec[] = data.flatMap((td, i): SlotSpec[] => {
      if (method === "z") return starts[i]!.map((start) => ({ data: td, start }));
      return [{ data: td, start: undefined }];
    });
    const untrained = method === "z-untrained";
    const net = untrained
      ? SuperNet.create(ctx.gpu, {
        ...ctx.state.model,
        tasks: slots.length,
        seed: ctx.state.model.seed + 1,
      })
      : new SuperNet(ctx.gpu, { ...ctx.state.model, tasks: slots.length });
    if (!untrained) restoreArenas(ctx.gpu, ctx.tensors, { generator: net.params }, ctx.path);
    // z-untrained starts from the mean of its own initial table, like the seed's mean z.
    const own = untrained
      ? initTaskVectors(ctx.family.tasks.length, d, {
        init: ctx.state.model.zInit,
        seed: ctx.state.model.seed + 1,
      })
      : ctx.table;
    const ownStats = untrained ? trainedZStats(ctx.family, own, d) : stats;
    const table = new Float32Array(slots.length * d);
    slots.forEach((s, t) => table.set(s.start?.z ?? ownStats.mean, t * d));
    write(ctx.gpu, net.z.get("z"), table);
    const lr = seedRecipe ? (SEED_ADAPT_PRESET.lr ?? 0.01) : zLr * ownStats.spread / stats.spread;
    const training = method !== "zero-shot";
    const group = training
      ? new ParamGroup(ctx.gpu, net.z, {
        optimizer: optimizerConfig(opts.optimizer, lr),
        schedule: { lr, kind: "constant", warmup: 0, steps: opts.zSteps ?? opts.steps },
      })
      : undefined;
    const learning = mean(data.map((td) => td.learn.indices.length));
    const prior = seedRecipe
      ? 0
      : opts.prior * (opts.priorImages ? opts.priorImages / learning : 1);
    const steps = training ? (seedRecipe ? opts.steps : opts.zSteps ?? opts.steps) : 0;
    const centre = group && prior > 0
      ? tensorFrom(ctx.gpu, [slots.length, d], table.map((_, k) => ownStats.mean[k % d]!))
      : undefined;
    const c = prior / (d * ownStats.spread ** 2);
    const model: SlotModel = {
      trainable: training ? d : 0,
      forward: (tape, inputs) => net.forward(tape, inputs),
      trainForward: (tape, inputs) => net.forward(tape, { ...inputs, grads: { z: group?.grads } }),
      groups: group ? [group] : [],
      regularize: centre && group
        ? axpby(ctx.gpu, net.z.get("z"), group.grads.get("z"), {
          b: centre,
          alpha: c,
          beta: -c,
          accumulate: true,
        })
        : undefined,
      destroy: () => {
        group?.destroy();
        centre?.destroy();
        net.destroy();
      },
    };
    ctx.onEvent?.({ kind: "method", method, trainable: model.trainable, slots: slots.length, lr });
    try {
      const outcomes = await runSlots(ctx, method, {
        slots,
        model,
        steps,
        patience: seedRecipe ? 0 : opts.patience,
        select: !seedRecipe,
      });
      const zs = training ? await read(ctx.gpu, net.z.get("z")) : table;
      return finish(outcomes.map((outcome, t) => ({
        slot: slots[t]!,
        outcome,
        lr,
        trainable: model.trainable,
        z: zs.slice(t * d, (t + 1) * d),
      })));
    } finally {
      model.destroy();
    }
  }

  // Baselines: one slot per task (finetune: one task at a time, as the generator is shared),
  // each learning rate (and, for full, weight decay) of the grid in turn; the validation slice
  // picks the pair per task.
  const base = method === "full" ? opts.fullLr : method === "head" ? opts.headLr : opts.finetuneLr;
  const canSelect = data.every((td) => td.validation);
  const lrs = opts.lrGrid && canSelect ? [base / 3, base, base * 3] : [base];
  const given = opts.fullWeightDecay.length > 0 ? opts.fullWeightDecay : [0];
  const decays = method !== "full" ? [undefined] : canSelect ? given : given.slice(0, 1);
  const grid = lrs.flatMap((lr) => decays.map((weightDecay) => ({ lr, weightDecay })));
  const groupsOfTasks = method === "finetune" ? data.map((td) => [td]) : [data];
  const outcomes: {
    slot: SlotSpec;
    outcome: SlotOutcome;
    lr: number;
    weightDecay?: number;
    trainable: number;
  }[] = [];
  const forgetting = new Map<TaskData, MethodResult["forgetting"]>();
  for (const { lr, weightDecay } of grid) {
    for (const tasks of groupsOfTasks) {
      const slots = tasks.map((td) => ({ data: td, start: starts[data.indexOf(td)]![0] }));
      const budget = method === "full" ? fullBudget(ctx, slots) : undefined;
      const steps = budget?.steps ?? opts.steps;
      const model = await baselineModel(ctx, method, { slots, lr, weightDecay, steps });
      ctx.onEvent?.({
        kind: "method",
        method,
        trainable: model.trainable,
        slots: slots.length,
        lr,
        ...(weightDecay !== undefined ? { weightDecay } : {}),
        steps,
      });
      try {
        const res = await runSlots(ctx, method, {
          slots,
          model,
          steps,
          patience: opts.patience,
          select: true,
          evalEvery: budget?.evalEvery,
          augment: budget?.augment,
        });
        res.forEach((outcome, t) =>
          outcomes.push({ slot: slots[t]!, outcome, lr, weightDecay, trainable: model.trainable })
        );
        if (method === "finetune" && opts.forgetting) {
          const key = tasks[0]!;
          const measured = await measureForgetting(ctx, model);
          const prev = outcomes.filter((o) => o.slot.data === key);
          // Keep the forgetting of the learning rate this task will pick.
          const latest = prev[prev.length - 1]!;
          const bestSoFar = prev.reduce((a, b) =>
            (b.outcome.selection ?? 0) < (a.outcome.selection ?? 0) ? b : a
          );
          if (bestSoFar === latest) forgetting.set(key, measured);
        }
      } finally {
        model.destroy();
      }
    }
  }
  return finish(outcomes).map((o, i) => {
    const f = forgetting.get(data[i]!);
    return f ? { ...o, result: { ...o.result, forgetting: f } } : o;
  });
}

/**
 * The budget of `full` over these slots: the larger of the shared step cap and `fullEpochs`
 * epochs of the largest slot's learning images, an evaluation at least once an epoch, and its
 * augmentation (crops, and flips where a mirror image keeps its class).
 */
export function fullBudget(
  ctx: Pick<Context, "options" | "dataset">,
  slots: readonly SlotSpec[],
): { steps: number; evalEvery: number; augment?: Augment } {
  const opts = ctx.options;
  const batch = slotBatch(opts.batch, slots);
  const perEpoch = Math.ceil(Math.max(...slots.map((s) => s.data.learn.indices.length)) / batch);
  const steps = Math.max(opts.steps, opts.fullEpochs * perEpoch);
  return {
    steps,
    evalEvery: steps > opts.steps ? Math.max(opts.evalEvery, perEpoch) : opts.evalEvery,
    augment: fullAugment(opts, ctx.dataset),
  };
}

/**
 * The crops (padding H / 8) and flips (where a mirror image keeps its class) `full` trains on,
 * or none with `fullAugment` off.
 */
export function fullAugment(
  options: Pick<AdaptOptions, "fullAugment">,
  dataset: Pick<Dataset, "name" | "shape">,
): Augment | undefined {
  if (!options.fullAugment) return undefined;
  return { pad: Math.floor(dataset.shape[1] / 8), flip: mirrorKeepsClass(dataset.name) };
}
