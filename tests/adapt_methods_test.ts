/**
 * The adaptation methods of issue 10 on a tiny trained run (MNIST, mlp target): the best and
 * population inits, batched multi-task adaptation against adapting each task alone, the prior on
 * z, the validation slice, the head baseline's frozen layers, collapse detection, and the
 * meta-training step.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  adapt,
  ADAPT_DEFAULTS,
  type AdaptOptions,
  fullBudget,
  isCollapsed,
  splitValidation,
  trainedZStats,
} from "../src/adapt/mod.ts";
import { loadCheckpoint } from "../src/checkpoint.ts";
import { loadDataset } from "../src/data/dataset.ts";
import { fewShot, Sampler } from "../src/data/sampler.ts";
import { isReserved, makeFamily, taskExamples } from "../src/data/tasks.ts";
import { Evaluator, StepProgram } from "../src/engine.ts";
import { restoreArenas } from "../src/checkpoint.ts";
import { read, tensorFrom } from "../src/gpu/tensor.ts";
import { PlainNet, SuperNet } from "../src/model/supernet.ts";
import { optimizerConfig, ParamGroup } from "../src/optim.ts";
import { loadSafetensors } from "../src/safetensors.ts";
import { MODEL_FILE, modelArenas, type RunState, train, TRAIN_DEFAULTS } from "../src/train.ts";
import { getGpu } from "./util.ts";

/** A tiny run trained once for the tests below: 9 MNIST tasks, the last 2 held out. */
const runDir = await Deno.makeTempDir({ prefix: "supernet-adapt-" });
let trained: Promise<void> | undefined;
function trainedRun(): Promise<void> {
  trained ??= getGpu().then((gpu) =>
    train(gpu, {
      ...TRAIN_DEFAULTS,
      target: "mlp",
      holdoutLast: 2,
      steps: 60,
      tasksPerStep: 4,
      batch: 16,
      evalEvery: 0,
      evalTasks: 2,
      out: runDir,
    }).then(() => {})
  );
  return trained;
}

const tiny: AdaptOptions = {
  ...ADAPT_DEFAULTS,
  run: runDir,
  steps: 12,
  batch: 16,
  evalEvery: 4,
  patience: 0,
  forgetting: false,
  // The whole network for the step cap and one weight decay: its epochs over MNIST and a
  // second decay would only lengthen the suite (the budget has its own test below).
  fullEpochs: 0,
  fullWeightDecay: [0],
};

Deno.test("the validation slice is carved per class from the training images, disjoint", () => {
  const labels = Float32Array.from({ length: 60 }, (_, k) => (k % 3 === 0 ? 1 : 0));
  const examples = { indices: Uint32Array.from(labels.keys(), (k) => 1000 + k), labels };
  const { learn, validation } = splitValidation(examples, { fraction: 0.25, seed: 4 });
  assert.ok(validation);
  assert.equal(learn.indices.length + validation.indices.length, 60);
  const held = new Set(validation.indices);
  assert.ok([...learn.indices].every((i) => !held.has(i)));
  // 20 positives -> 5 held, 40 negatives -> 10 held.
  assert.equal(validation.labels.filter((l) => l === 1).length, 5);
  assert.equal(validation.labels.filter((l) => l === 0).length, 10);
  const few = { indices: examples.indices.slice(0, 12), labels: labels.slice(0, 12) };
  assert.equal(splitValidation(few, { fraction: 0.25, seed: 4 }).validation, undefined);
});

Deno.test("a network that predicts one class for every image is flagged as collapsed", () => {
  const test = { indices: new Uint32Array(4), labels: new Float32Array([0, 0, 1, 1]) };
  assert.ok(isCollapsed({ step: 0, accuracy: 0.5, loss: Math.LN2 }, test));
  assert.ok(isCollapsed({ step: 0, accuracy: 0.5, loss: 0.9 }, test));
  assert.ok(!isCollapsed({ step: 0, accuracy: 0.5, loss: 0.6 }, test));
  assert.ok(!isCollapsed({ step: 0, accuracy: 0.75, loss: 0.7 }, test));
});

Deno.test("best init ranks every trained z by its loss on the task's training images", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const { info, tensors } = await loadCheckpoint(runDir, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const family = state.family;
  const task = family.heldOut[0]!;
  // 100 images per class: the learning set (less the validation slice) is scored whole.
  const options = { ...tiny, task: String(task), shots: 100, init: "best" as const };
  const result = await adapt(gpu, {
    ...options,
    methods: ["z"],
    out: join(runDir, "adapt_best"),
  });
  const t = result.tasks[0]!;
  assert.deepEqual(t.ranking.map((r) => r.task).sort((a, b) => a - b), family.train);
  for (let k = 1; k < t.ranking.length; k++) {
    assert.ok(t.ranking[k - 1]!.trainLoss <= t.ranking[k]!.trainLoss);
  }
  assert.equal(t.results[0]!.start, `z of '${family.tasks[t.ranking[0]!.task]!.name}'`);
  // The same losses from a plain evaluation, one trained network at a time.
  const dataset = await loadDataset("mnist");
  const pool = fewShot(family.tasks[task]!, dataset.train, { shots: 100, seed: options.seed });
  const { learn } = splitValidation(pool, {
    fraction: options.validation,
    seed: options.seed,
    reserve: (info.options as { reserve?: number }).reserve,
  });
  const net = new SuperNet(gpu, state.model);
  restoreArenas(gpu, tensors[MODEL_FILE]!, modelArenas(net), "model");
  for (const r of t.ranking) {
    const evaluator = new Evaluator(gpu, {
      dataset,
      family,
      tasks: [r.task],
      forward: (tape, inputs) => net.forward(tape, inputs),
      batch: 50,
      tasksPerChunk: 1,
      split: "train",
      examples: [learn],
    });
    const [score] = await evaluator.evaluate();
    evaluator.destroy();
    assert.ok(Math.abs(score!.loss - r.trainLoss) < 1e-4, `task ${r.task}`);
  }
  net.destroy();
});

Deno.test("adapting all held-out tasks at once matches adapting each alone", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const both = await adapt(gpu, {
    ...tiny,
    task: "all-heldout",
    methods: ["z", "full"],
    population: 2,
    out: join(runDir, "adapt_all"),
  });
  assert.equal(both.tasks.length, 2);
  for (const t of both.tasks) {
    const alone = await adapt(gpu, {
      ...tiny,
      task: String(t.task),
      methods: ["z", "full"],
      population: 2,
      out: join(runDir, `adapt_${t.task}`),
    });
    const a = alone.tasks[0]!;
    assert.deepEqual(a.ranking.map((r) => r.task), t.ranking.map((r) => r.task));
    for (const [i, r] of t.results.entries()) {
      const s = a.results[i]!;
      assert.equal(r.start, s.start);
      assert.equal(r.steps, s.steps);
      assert.ok(Math.abs(r.accuracy - s.accuracy) <= 1 / t.testImages + 1e-9, `${r.method} acc`);
      assert.ok(Math.abs(r.loss - s.loss) < 1e-3, `${r.method}: ${r.loss} vs ${s.loss}`);
    }
    const zOf = async (dir: string) =>
      (await loadSafetensors(join(dir, `z_${t.task}.safetensors`))).tensors.get("z")!.data;
    const zBoth = await zOf(both.out);
    const zAlone = await zOf(alone.out);
    zBoth.forEach((v, k) => assert.ok(Math.abs(v - zAlone[k]!) < 1e-4, `z[${k}]`));
  }
});

Deno.test("population adapts K trained z and the mean z, and the z loss falls", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const result = await adapt(gpu, {
    ...tiny,
    methods: ["z"],
    population: 3,
    steps: 20,
    out: join(runDir, "adapt_population"),
  });
  const t = result.tasks[0]!;
  const z = t.results[0]!;
  const { info } = await loadCheckpoint(runDir, []);
  const family = (info.state as unknown as RunState).family;
  const starts = [
    ...t.ranking.slice(0, 3).map((r) => `z of '${family.tasks[r.task]!.name}'`),
    "mean z",
  ];
  assert.ok(starts.includes(z.start!), `${z.start} is one of the 4 starts`);
  assert.ok(z.validationLoss !== undefined, "the validation slice picks the winner");
  // The run was trained with a reserve: the slice is the task's reserved images, the rest learn.
  assert.equal((info.options as { reserve?: number }).reserve, 0.1);
  const dataset = await loadDataset("mnist");
  const all = taskExamples(family.tasks[t.task]!, dataset.train);
  const reserved = [...all.indices].filter((i) => isReserved(i, 0.1)).length;
  assert.ok(reserved > 0);
  assert.equal(t.validationImages, reserved);
  assert.equal(t.trainImages, all.indices.length - reserved);
  assert.ok(z.curve.at(-1)!.loss < z.curve[0]!.loss, "test loss should fall from the start");
});

Deno.test("without a validation slice every slot ends at its last step", async () => {
  await trainedRun();
  const gpu = await getGpu();
  // 5 images per class give no slice; a large step makes the training loss go up and down, so
  // picking by it would stop early.
  const result = await adapt(gpu, {
    ...tiny,
    methods: ["z", "full"],
    shots: 5,
    lr: 2,
    fullLr: 0.5,
    lrGrid: false,
    out: join(runDir, "adapt_no_slice"),
  });
  for (const m of result.tasks[0]!.results) {
    assert.equal(result.tasks[0]!.validationImages, 0);
    assert.equal(m.steps, tiny.steps, `${m.method} should end at step ${tiny.steps}`);
    assert.equal(m.stepsRun, tiny.steps);
  }
});

Deno.test("a strong prior keeps the adapted z near the trained z's mean", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const { info, tensors } = await loadCheckpoint(runDir, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const d = state.model.generator.zDim;
  const table = tensors[MODEL_FILE]!.get("task.z")!.data as Float32Array;
  const { mean } = trainedZStats(state.family, table, d);
  const distance = async (prior: number) => {
    const r = await adapt(gpu, {
      ...tiny,
      init: "mean",
      lr: 0.05,
      prior,
      validation: 0,
      methods: ["z"],
      out: join(runDir, `adapt_prior_${prior}`),
    });
    const z = (await loadSafetensors(join(r.out, `z_${r.tasks[0]!.task}.safetensors`))).tensors
      .get("z")!.data;
    return Math.hypot(...Array.from(z, (v, k) => v - mean[k]!));
  };
  const free = await distance(0);
  const held = await distance(1000);
  assert.ok(free > 0, "z should move without a prior");
  assert.ok(held < 0.5 * free, `prior: ${held} should be well below ${free}`);
});

Deno.test("the head baseline trains the last layer only", async () => {
  const gpu = await getGpu();
  const dataset = await loadDataset("mnist");
  const family = makeFamily("one_vs_anchor", dataset.classNames);
  const net = new PlainNet(gpu, {
    target: "mlp",
    inputShape: dataset.shape,
    outputs: 1,
    slope: 0.01,
    seed: 2,
    tasks: 1,
    frozen: new Set(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]),
  });
  assert.deepEqual(net.params.entries.map((e) => e.name), ["fc3.weight", "fc3.bias"]);
  const taskIndices = tensorFrom(gpu, [1], new Uint32Array([0]));
  const fixedBefore = await read(gpu, net.fixed.flat);
  const before = await read(gpu, net.params.flat);
  const group = new ParamGroup(gpu, net.params, {
    optimizer: optimizerConfig("adam", 0.01),
    schedule: { lr: 0.01, kind: "constant", warmup: 0, steps: 5 },
  });
  const sampler = new Sampler(gpu, dataset, {
    family,
    trainTasks: [family.heldOut[0]!],
    tasksPerStep: 1,
    batch: 16,
    seed: 1,
    balanced: true,
  });
  const program = new StepProgram(gpu, {
    source: sampler,
    // The sampler names the family's task; the network holds that task's one weight set.
    forward: (tape, inputs) => net.forward(tape, { x: inputs.x, taskIndices, grads: group.grads }),
    groups: [group],
  });
  for (let s = 1; s <= 5; s++) program.run(s);
  const fixedAfter = await read(gpu, net.fixed.flat);
  const after = await read(gpu, net.params.flat);
  assert.deepEqual(new Uint8Array(fixedAfter.buffer), new Uint8Array(fixedBefore.buffer));
  assert.ok(after.some((v, k) => v !== before[k]), "the last layer should move");
  program.destroy();
  sampler.destroy();
  group.destroy();
  net.destroy();
  taskIndices.destroy();
});

Deno.test("meta-training lowers the query loss and leaves the trained z table alone", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir({ prefix: "supernet-meta-" });
  const losses: number[] = [];
  await train(gpu, {
    ...TRAIN_DEFAULTS,
    target: "mlp",
    steps: 80,
    tasksPerStep: 4,
    batch: 16,
    evalEvery: 0,
    evalTasks: 1,
    logEvery: 1,
    meta: true,
    metaEvery: 1,
    out,
  }, { onEvent: (e) => e.kind === "step" && losses.push(e.loss) });
  const first = losses.slice(0, 20).reduce((a, b) => a + b) / 20;
  const last = losses.slice(-20).reduce((a, b) => a + b) / 20;
  assert.ok(last < 0.8 * first, `query loss should fall by 20%: ${first} -> ${last}`);
  // Only meta steps ran: the trained table is still the one-hot initial table.
  const { tensors } = await loadCheckpoint(out, [MODEL_FILE]);
  const table = tensors[MODEL_FILE]!.get("task.z")!;
  const [tasks, d] = table.shape as [number, number];
  for (let t = 0; t < tasks; t++) {
    for (let k = 0; k < d; k++) assert.equal(table.data[t * d + k], t === k ? 1 : 0);
  }
  await Deno.remove(out, { recursive: true });
});

Deno.test("the whole network's budget: epochs of the task's images, at least the step cap", () => {
  const slot = (n: number) => ({
    data: {
      task: 0,
      learn: { indices: new Uint32Array(n), labels: new Float32Array(n) },
      test: { indices: new Uint32Array(0), labels: new Float32Array(0) },
    },
  });
  const of = (options: Partial<AdaptOptions>, dataset: string, sizes: number[]) =>
    fullBudget({
      options: { ...ADAPT_DEFAULTS, steps: 150, batch: 64, evalEvery: 25, ...options },
      dataset: { name: dataset, shape: [3, 32, 32] } as never,
    }, sizes.map(slot));
  // 30 epochs of the largest slot's 9,000 images at 64 a step: 141 steps an epoch.
  assert.deepEqual(of({}, "cifar10", [9000, 8000]), {
    steps: 4230,
    evalEvery: 141,
    augment: { pad: 4, flip: true },
  });
  // 26 images: one step an epoch, so the step cap is the larger budget; no flips for characters.
  assert.deepEqual(of({}, "omniglot", [26]), {
    steps: 150,
    evalEvery: 25,
    augment: { pad: 4, flip: false },
  });
  assert.deepEqual(of({ fullEpochs: 0, fullAugment: false }, "cifar10", [9000]), {
    steps: 150,
    evalEvery: 25,
    augment: undefined,
  });
});

Deno.test("the whole network stops early within its epochs and picks lr and weight decay", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const result = await adapt(gpu, {
    ...tiny,
    methods: ["full"],
    steps: 4,
    batch: 32,
    fullEpochs: 3,
    fullWeightDecay: [0, 0.1],
    lrGrid: false,
    patience: 1,
    out: join(runDir, "adapt_full_budget"),
  });
  const t = result.tasks[0]!;
  const r = t.results[0]!;
  const perEpoch = Math.ceil(t.trainImages / 32);
  assert.ok(t.validationImages > 0);
  // Evaluations fall once an epoch (and at the cap); the run stops at most 3 epochs in.
  assert.ok(r.curve.length >= 2);
  for (const p of r.curve.slice(1)) {
    assert.ok(p.step % perEpoch === 0 || p.step === 3 * perEpoch, `eval at step ${p.step}`);
  }
  assert.ok(r.stepsRun <= 3 * perEpoch && r.stepsRun >= perEpoch, `${r.stepsRun} steps`);
  assert.ok(r.weightDecay === 0 || r.weightDecay === 0.1, `decay ${r.weightDecay}`);
  assert.equal(r.imagesSeen, r.stepsRun * 32);
  // Two runs of the grid: the search drew both runs' images.
  assert.ok(r.searchImages! > r.imagesSeen! && r.searchImages! <= 2 * 3 * perEpoch * 32);
  assert.equal(r.searchImages! % 32, 0);
});

Deno.test({
  name: "adaptation test cleanup",
  fn: async () => {
    await trained;
    await Deno.remove(runDir, { recursive: true });
  },
});
