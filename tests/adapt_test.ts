/**
 * z-only adaptation as `adapt` builds it: the generator's parameters stay bit-identical while the
 * task's z moves and the loss falls; and the helpers that pick the task and its initial z.
 */
import assert from "node:assert/strict";
import { initialZ, resolveTask } from "../src/adapt/mod.ts";
import { loadDataset } from "../src/data/dataset.ts";
import { Sampler } from "../src/data/sampler.ts";
import { makeFamily } from "../src/data/tasks.ts";
import { StepProgram } from "../src/engine.ts";
import { read } from "../src/gpu/tensor.ts";
import { SuperNet, superNetConfig } from "../src/model/supernet.ts";
import { optimizerConfig, ParamGroup } from "../src/optim.ts";
import type { RunState } from "../src/train.ts";
import { getGpu } from "./util.ts";

Deno.test("z-only adaptation leaves the generator bit-identical and lowers the loss", async () => {
  const gpu = await getGpu();
  const dataset = await loadDataset("mnist");
  const family = makeFamily("one_vs_anchor", dataset.classNames);
  const task = family.heldOut[0]!;
  const net = SuperNet.create(
    gpu,
    superNetConfig({ target: "mlp", inputShape: dataset.shape, tasks: family.tasks.length }),
  );
  const before = await read(gpu, net.params.flat);
  const zBefore = await read(gpu, net.z.flat);
  const schedule = { lr: 0.05, kind: "constant" as const, warmup: 0, steps: 30 };
  const z = new ParamGroup(gpu, net.z, { optimizer: optimizerConfig("adam", 0.05), schedule });
  const sampler = new Sampler(gpu, dataset, {
    family,
    trainTasks: [task],
    tasksPerStep: 1,
    batch: 32,
    seed: 3,
    balanced: true,
  });
  const program = new StepProgram(gpu, {
    source: sampler,
    forward: (tape, inputs) => net.forward(tape, { ...inputs, grads: { z: z.grads } }),
    groups: [z],
  });
  const losses: number[] = [];
  for (let step = 1; step <= 30; step++) {
    program.run(step);
    if (step <= 3 || step > 27) losses.push((await program.readMetrics()).loss);
  }
  const after = await read(gpu, net.params.flat);
  const zAfter = await read(gpu, net.z.flat);
  assert.deepEqual(new Uint8Array(after.buffer), new Uint8Array(before.buffer));
  const d = net.config.generator.zDim;
  const moved = zAfter.slice(task * d, (task + 1) * d).some((v, k) => v !== zBefore[task * d + k]);
  assert.ok(moved, "the held-out task's z should change");
  const first = (losses[0]! + losses[1]! + losses[2]!) / 3;
  const last = (losses[3]! + losses[4]! + losses[5]!) / 3;
  assert.ok(last < 0.8 * first, `loss should fall by 20%: ${first} -> ${last}`);
  program.destroy();
  sampler.destroy();
  z.destroy();
  net.destroy();
});

Deno.test("tasks resolve by index or name, and the mean z averages the training tasks only", () => {
  const family = makeFamily("one_vs_anchor", ["a", "b", "c"]);
  assert.equal(resolveTask(family, undefined), family.heldOut[0]);
  assert.equal(resolveTask(family, "0"), 0);
  assert.equal(resolveTask(family, family.tasks[1]!.name), 1);
  assert.throws(() => resolveTask(family, "nope"), /Unknown task 'nope'/);
  const state = { model: { generator: { zDim: 2 } } } as unknown as RunState;
  const table = new Float32Array([1, 0, 0, 1]);
  assert.deepEqual([...initialZ(family, state, table, { task: 1, init: "mean", seed: 0 })], [
    1,
    0,
  ]);
  assert.deepEqual([...initialZ(family, state, table, { task: 1, init: "one_hot", seed: 0 })], [
    0,
    1,
  ]);
});
