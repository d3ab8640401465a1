/**
 * Validation tasks and the adaptation recipe chosen on them: the family keeps them out of
 * training, the folds split their training images, and `chooseRecipe` on a tiny MNIST run scores
 * every candidate on training images only and records the lowest-loss one, which `adapt` then
 * follows.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { adapt, ADAPT_DEFAULTS, type ZInitName } from "../src/adapt/mod.ts";
import {
  chooseRecipe,
  MIN_GAIN,
  RECIPE_FILE,
  recipeFolds,
  runRecipe,
} from "../src/adapt/recipe.ts";
import { pairedInterval } from "../src/stats.ts";
import { loadCheckpoint } from "../src/checkpoint.ts";
import { loadDataset } from "../src/data/dataset.ts";
import type { Dataset } from "../src/data/split.ts";
import { makeFamily, taskExamples } from "../src/data/tasks.ts";
import { defaultValidationTasks, type RunState, train, TRAIN_DEFAULTS } from "../src/train.ts";
import { getGpu } from "./util.ts";

const NAMES = Array.from({ length: 12 }, (_, i) => `c${i}`);

Deno.test("validation tasks are the last tasks before the held-out ones, kept out of training", () => {
  const family = makeFamily("one_vs_anchor", NAMES, { holdoutLast: 3, validationTasks: 2 });
  assert.deepEqual(family.heldOut, [8, 9, 10]);
  assert.deepEqual(family.validation, [6, 7]);
  assert.deepEqual(family.train, [0, 1, 2, 3, 4, 5]);
  // Without validation tasks the family is as before (no field).
  assert.equal(makeFamily("one_vs_anchor", NAMES, { holdoutLast: 3 }).validation, undefined);
  assert.throws(
    () => makeFamily("one_vs_anchor", NAMES, { holdoutLast: 3, validationTasks: 8 }),
    /none left for training after holding out \[8,9,10\] and 8 validation/,
  );
});

Deno.test("in all_pairs a validation task's reversed twin leaves training too", () => {
  const family = makeFamily("all_pairs", NAMES.slice(0, 4), { holdoutLast: 1, validationTasks: 2 });
  const name = (i: number) => family.tasks[i]!.name;
  for (const v of family.validation!) {
    const [a, b] = name(v).split(" vs ");
    const twin = family.tasks.findIndex((t) => t.name === `${b} vs ${a}`);
    assert.ok(!family.train.includes(twin), `twin of ${name(v)} is trained`);
  }
  const all = [...family.heldOut, ...family.validation!, ...family.excluded, ...family.train];
  assert.equal(new Set(all).size, family.tasks.length);
});

/** A dataset whose classes have `perClass` training images each (pixels unused). */
function fakeDataset(classes: number, perClass: number): Dataset {
  const labels = Uint8Array.from({ length: classes * perClass }, (_, i) => i % classes);
  const split = { images: new Uint8Array(labels.length), labels, count: labels.length };
  return {
    name: "fake",
    shape: [1, 1, 1],
    classNames: NAMES.slice(0, classes),
    train: split,
    test: split,
    mean: [0],
    std: [1],
    source: "test",
  };
}

Deno.test("validation tasks are on by default only where a class has few images", () => {
  const family = makeFamily("one_vs_anchor", NAMES, { holdoutLast: 1 });
  assert.equal(defaultValidationTasks(fakeDataset(12, 100), family), 0);
  // 10 training tasks: a fifth of them.
  assert.equal(defaultValidationTasks(fakeDataset(12, 15), family), 2);
  const small = makeFamily("one_vs_anchor", NAMES.slice(0, 6), { holdoutLast: 1 });
  assert.equal(defaultValidationTasks(fakeDataset(6, 15), small), 0);
});

Deno.test("the folds split a task's training images per side, a quarter scored, seeded", () => {
  const labels = Float32Array.from({ length: 30 }, (_, k) => (k < 14 ? 0 : 1));
  const examples = { indices: Uint32Array.from(labels.keys()), labels };
  const { learn, score } = recipeFolds(3)(5, examples);
  assert.equal(learn.indices.length + score.indices.length, 30);
  assert.ok([...score.indices].every((i) => !learn.indices.includes(i)));
  assert.equal(score.labels.filter((l) => l === 0).length, 4); // round(14 / 4)
  assert.equal(score.labels.filter((l) => l === 1).length, 4); // round(16 / 4)
  assert.deepEqual(recipeFolds(3)(5, examples).score.indices, score.indices);
  assert.notDeepEqual(recipeFolds(4)(5, examples).score.indices, score.indices);
  const one = { indices: Uint32Array.of(0, 1, 2), labels: Float32Array.of(0, 1, 1) };
  assert.throws(() => recipeFolds(3)(7, one), /Validation task 7 has 1 and 2 training images/);
});

const runDir = await Deno.makeTempDir({ prefix: "supernet-recipe-" });
let trained: Promise<void> | undefined;
function trainedRun(): Promise<void> {
  trained ??= getGpu().then((gpu) =>
    train(gpu, {
      ...TRAIN_DEFAULTS,
      target: "mlp",
      holdoutLast: 1,
      validationTasks: 2,
      steps: 30,
      tasksPerStep: 3,
      batch: 16,
      evalEvery: 0,
      evalTasks: 0,
      out: runDir,
    }).then(() => {})
  );
  return trained;
}

Deno.test("a recipe is chosen on the validation tasks' training images and adapt follows it", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const { info } = await loadCheckpoint(runDir, []);
  const state = info.state as unknown as RunState;
  assert.deepEqual(state.family.validation, [6, 7]);
  assert.ok(!state.family.train.includes(6) && !state.family.train.includes(7));
  assert.equal((info.options as { validationTasks: number }).validationTasks, 2);

  const grid = {
    starts: ["mean", "population"] as ZInitName[],
    lrScales: [1],
    priorScales: [0, 1],
  };
  const choice = await chooseRecipe(gpu, {
    run: runDir,
    steps: 4,
    evalEvery: 2,
    batch: 8,
    seed: 1,
    grid,
  });
  // 2 starts x 1 rate, 1 more prior (the default's is done), and the seed's recipe.
  assert.deepEqual(choice.candidates.map((c) => c.name).slice(0, 2), [
    "mean, lr x1, prior 0.05",
    "population, lr x1, prior 0.05",
  ]);
  assert.equal(choice.candidates.length, 4);
  assert.equal(choice.defaults.loss, choice.candidates[1]!.curve.at(-1)!.loss);
  // A candidate replaces the built-in defaults only where it beats them by MIN_GAIN on average
  // with the paired interval over the validation tasks above 0; then it is the lowest such one.
  const defaults = choice.candidates[1]!;
  const eligible = choice.candidates.filter((c) => {
    const g = pairedInterval(defaults.atLast!.map((t) => t.loss), c.tasks.map((t) => t.loss));
    return c !== defaults && g.estimate >= MIN_GAIN && g.lo > 0;
  });
  if (eligible.length === 0) {
    assert.equal(choice.chosen.name, "the built-in defaults");
    assert.deepEqual([choice.chosen.init, choice.chosen.zSteps, choice.chosen.prior], [
      "population",
      4,
      ADAPT_DEFAULTS.prior,
    ]);
    assert.equal(choice.chosenScore.loss, choice.defaults.loss);
  } else {
    const winner = choice.candidates.find((c) => c.name === choice.chosen.name)!;
    assert.equal(winner.loss, Math.min(...eligible.map((c) => c.loss)));
    assert.equal(choice.chosen.zSteps, winner.steps);
  }
  for (const c of choice.candidates) {
    assert.deepEqual(c.curve.map((p) => p.step), [0, 2, 4]);
    assert.equal(c.loss, Math.min(...c.curve.map((p) => p.loss)));
    assert.deepEqual(c.tasks.map((t) => t.task), [6, 7]);
  }
  // Only training images: learn + score are each task's training images.
  const dataset = await loadDataset("mnist");
  const perTask = [6, 7].map((t) => taskExamples(state.family.tasks[t]!, dataset.train));
  const total = perTask.reduce((n, e) => n + e.indices.length, 0) / 2;
  assert.ok(Math.abs(choice.learnImages + choice.scoreImages - total) < 1e-9);
  const written = JSON.parse(await Deno.readTextFile(join(runDir, RECIPE_FILE)));
  assert.equal(written.chosen.name, choice.chosen.name);

  const recipe = (await runRecipe(runDir))!;
  assert.equal(recipe.zSteps, choice.chosen.zSteps);
  assert.equal(await runRecipe(join(runDir, "nothing-here")), undefined);
  // adapt runs z for the recipe's steps and the baselines for their own.
  const result = await adapt(gpu, {
    ...ADAPT_DEFAULTS,
    ...recipe,
    zSteps: 2,
    fullEpochs: 0,
    run: runDir,
    methods: ["z", "full"],
    population: 1,
    steps: 4,
    batch: 8,
    evalEvery: 2,
    lrGrid: false,
    curves: false,
    out: join(runDir, "adapt"),
  });
  const [z, full] = result.tasks[0]!.results;
  assert.equal(z!.stepsRun, 2);
  assert.equal(full!.stepsRun, 4);
});
