/**
 * The baselines' models over T slots: a whole network from scratch (`full`), the last layer of
 * the generated network (`head`), generator and z together (`finetune`), and what `finetune`
 * costs the tasks already learned.
 *
 * @module
 */
import { restoreArenas } from "../checkpoint.ts";
import { Evaluator, mean } from "../engine.ts";
import { generateWeights } from "../export/network.ts";
import type { Gpu } from "../gpu/device.ts";
import { read, write } from "../gpu/tensor.ts";
import { PlainNet, SuperNet } from "../model/supernet.ts";
import { weightCount } from "../model/target.ts";
import { optimizerConfig, ParamGroup } from "../optim.ts";
import { mixSeed } from "../random.ts";
import { spread } from "../train.ts";
import type { Method, MethodResult } from "./options.ts";
import type { Context } from "./context.ts";
import type { SlotModel, SlotSpec } from "./slots.ts";

/** `full`, `head` or `finetune` over the given slots at learning rate `lr`. */
export async function baselineModel(
  ctx: Context,
  method: Method,
  options: { slots: SlotSpec[]; lr: number; weightDecay?: number; steps?: number },
): Promise<SlotModel & { generator?: SuperNet }> {
  const { gpu, state, options: opts } = ctx;
  const { slots, lr } = options;
  const steps = options.steps ?? opts.steps;
  const schedule = { lr, kind: "constant" as const, warmup: 0, steps };
  const optimizer = optimizerConfig(opts.optimizer, lr, options.weightDecay);
  if (method === "finetune") {
    const net = new SuperNet(gpu, { ...state.model, tasks: 1 });
    restoreArenas(gpu, ctx.tensors, { generator: net.params }, ctx.path);
    write(gpu, net.z.get("z"), slots[0]!.start!.z);
    const z = new ParamGroup(gpu, net.z, { optimizer, schedule });
    const params = new ParamGroup(gpu, net.params, { optimizer, schedule });
    return {
      trainable: net.parameterCount + state.model.generator.zDim,
      forward: (tape, inputs) => net.forward(tape, inputs),
      trainForward: (tape, inputs) =>
        net.forward(tape, { ...inputs, grads: { z: z.grads, params: params.grads } }),
      groups: [z, params],
      generator: net,
      destroy: () => {
        z.destroy();
        params.destroy();
        net.destroy();
      },
    };
  }
  const spec = {
    ...state.model,
    seed: opts.seed,
    seeds: slots.map((s) => mixSeed(opts.seed, s.data.task)),
    tasks: slots.length,
  };
  let frozen: Set<string> | undefined;
  if (method === "head") {
    const generator = new SuperNet(gpu, { ...state.model, tasks: 1 });
    restoreArenas(gpu, ctx.tensors, { generator: generator.params }, ctx.path);
    const last = generator.spec.layers.filter((l) => l.kind === "linear").at(-1)!;
    frozen = new Set(generator.weights.map((w) => w.name));
    frozen.delete(`${last.name}.weight`);
    frozen.delete(`${last.name}.bias`);
    const generated: Map<string, Float32Array>[] = [];
    for (const s of slots) generated.push(await generateWeights(gpu, generator, s.start!.z));
    generator.destroy();
    const net = new PlainNet(gpu, { ...spec, frozen });
    net.assign(
      new Map(
        [...generated[0]!.keys()].map((name) => {
          const parts = generated.map((g) => g.get(name)!);
          const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
          parts.forEach((p, t) => all.set(p, t * p.length));
          return [name, all];
        }),
      ),
    );
    return plainModel(gpu, net, { optimizer, schedule, perSlot: slots.length });
  }
  return plainModel(gpu, new PlainNet(gpu, spec), { optimizer, schedule, perSlot: slots.length });
}

/** A slot model training every parameter of `net` that is not frozen. */
export function plainModel(
  gpu: Gpu,
  net: PlainNet,
  options: {
    optimizer: ReturnType<typeof optimizerConfig>;
    schedule: ParamGroup["schedule"];
    perSlot: number;
  },
): SlotModel {
  const group = new ParamGroup(gpu, net.params, options);
  const trainable = net.params.entries.reduce((n, e) => n + e.tensor.size, 0) / options.perSlot;
  return {
    trainable: net.fixed.entries.length > 0 ? trainable : weightCount(net.spec),
    forward: (tape, inputs) => net.forward(tape, inputs),
    trainForward: (tape, inputs) => net.forward(tape, { ...inputs, grads: group.grads }),
    groups: [group],
    destroy: () => {
      group.destroy();
      net.destroy();
    },
  };
}

/**
 * Mean test accuracy of up to 8 training tasks (their own trained z) through the original
 * generator and through the fine-tuned one: the points `finetune` costs the tasks already
 * learned.
 */
export async function measureForgetting(
  ctx: Context,
  model: SlotModel & { generator?: SuperNet },
): Promise<MethodResult["forgetting"]> {
  const { gpu, state, family } = ctx;
  const tasks = spread(family.train, 8);
  const net = new SuperNet(gpu, state.model);
  restoreArenas(gpu, ctx.tensors, { generator: net.params, task: net.z }, ctx.path);
  const evaluator = new Evaluator(gpu, {
    dataset: ctx.dataset,
    family,
    tasks,
    forward: (tape, inputs) => net.forward(tape, inputs),
    batch: 100,
    tasksPerChunk: tasks.length,
    store: ctx.testStore,
  });
  try {
    const before = mean((await evaluator.evaluate()).map((s) => s.accuracy));
    write(gpu, net.params.flat, await read(gpu, model.generator!.params.flat));
    const after = mean((await evaluator.evaluate()).map((s) => s.accuracy));
    return { tasks: tasks.length, before, after };
  } finally {
    evaluator.destroy();
    net.destroy();
  }
}
