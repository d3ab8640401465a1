/**
 * Adapting more held-out tasks than one evaluation chunk holds (8): every method on 9 and on 17
 * tasks gives each task the numbers it gets alone, and a call that fails in a late method keeps
 * the methods it finished. A tiny run on MNIST all_pairs (45 pairs, the last 17 held out).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  adapt,
  ADAPT_DEFAULTS,
  type AdaptOptions,
  type AdaptResult,
  type Method,
  METHODS,
} from "../src/adapt/mod.ts";
import { loadCheckpoint } from "../src/checkpoint.ts";
import { type RunState, train, TRAIN_DEFAULTS } from "../src/train.ts";
import { getGpu } from "./util.ts";

const runDir = await Deno.makeTempDir({ prefix: "supernet-adapt-many-" });
let trained: Promise<void> | undefined;
function trainedRun(): Promise<void> {
  trained ??= getGpu().then((gpu) =>
    train(gpu, {
      ...TRAIN_DEFAULTS,
      family: "all_pairs",
      target: "mlp",
      holdoutLast: 17,
      steps: 20,
      tasksPerStep: 4,
      batch: 8,
      evalEvery: 0,
      evalTasks: 2,
      out: runDir,
    }).then(() => {})
  );
  return trained;
}

/** Every method, few steps, one learning rate, no learning curves: seconds per call. */
const tiny: AdaptOptions = {
  ...ADAPT_DEFAULTS,
  run: runDir,
  methods: [...METHODS],
  population: 1,
  steps: 4,
  batch: 8,
  evalEvery: 2,
  patience: 0,
  lrGrid: false,
  forgetting: false,
  curves: false,
  fullEpochs: 0,
  fullWeightDecay: [0],
};

/** Each method's numbers on `task` in `many` equal those of adapting it alone. */
async function assertAloneMatches(many: AdaptResult, task: number, out: string): Promise<void> {
  const gpu = await getGpu();
  const alone = await adapt(gpu, { ...tiny, task: String(task), out });
  const a = alone.tasks[0]!;
  const m = many.tasks.find((t) => t.task === task)!;
  assert.deepEqual(a.results.map((r) => r.method), m.results.map((r) => r.method));
  for (const [i, r] of m.results.entries()) {
    const s = a.results[i]!;
    assert.equal(r.start, s.start, `${r.method} start`);
    assert.equal(r.steps, s.steps, `${r.method} steps`);
    assert.ok(Math.abs(r.accuracy - s.accuracy) <= 1 / m.testImages + 1e-9, `${r.method} acc`);
    assert.ok(Math.abs(r.loss - s.loss) < 1e-3, `${r.method}: ${r.loss} vs ${s.loss}`);
  }
}

Deno.test("every method adapts 17 held-out tasks at once, each as it would alone", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const many = await adapt(gpu, { ...tiny, task: "all-heldout", out: join(runDir, "all") });
  assert.equal(many.tasks.length, 17);
  for (const t of many.tasks) {
    assert.deepEqual(t.results.map((r) => r.method), [...METHODS]);
    for (const r of t.results) assert.ok(Number.isFinite(r.loss), `${t.taskName} ${r.method}`);
  }
  // Task 16 sits in the third chunk of evaluation (the 9-task test below checks the second).
  await assertAloneMatches(many, many.tasks[16]!.task, join(runDir, "alone_16"));
});

Deno.test("every method adapts 9 tasks at once, each as it would alone", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const { info } = await loadCheckpoint(runDir, []);
  const nine = (info.state as unknown as RunState).family.heldOut.slice(0, 9);
  const many = await adapt(gpu, { ...tiny, task: nine.join(","), out: join(runDir, "nine") });
  assert.deepEqual(many.tasks.map((t) => t.task), nine);
  await assertAloneMatches(many, nine[8]!, join(runDir, "alone_nine"));
});

Deno.test("a call that fails in a late method keeps the methods it finished", async () => {
  await trainedRun();
  const gpu = await getGpu();
  const out = join(runDir, "failing");
  const { info } = await loadCheckpoint(runDir, []);
  const task = (info.state as unknown as RunState).family.heldOut.slice(0, 3).join(",");
  const options = { ...tiny, methods: ["zero-shot", "z-seed", "full"] as Method[], out, task };
  await assert.rejects(
    adapt(gpu, options, {
      onEvent: (e) => {
        if (e.kind === "method" && e.method === "full") throw new Error("stopped in full");
      },
    }),
    /stopped in full/,
  );
  const saved = JSON.parse(await Deno.readTextFile(join(out, "adapt.json"))) as AdaptResult & {
    finished: Method[];
  };
  assert.deepEqual(saved.finished, ["zero-shot", "z-seed"]);
  assert.equal(saved.tasks.length, 3);
  const started: Method[] = [];
  const resumed = await adapt(gpu, options, {
    kept: saved,
    onEvent: (e) => {
      if (e.kind === "method") started.push(e.method);
    },
  });
  assert.deepEqual(started, ["full"]);
  for (const [i, t] of resumed.tasks.entries()) {
    assert.deepEqual(t.results.map((r) => r.method), ["zero-shot", "z-seed", "full"]);
    assert.deepEqual(t.results.slice(0, 2), saved.tasks[i]!.results);
  }
});
