/**
 * `experiment`'s defaults: 3 held-out tasks wherever the family keeps at least 2 training tasks
 * with them (fewer otherwise), resolved by runExperiment (results.json records the resolved
 * options).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { getGpu } from "../src/gpu/device.ts";
import { makeFamily } from "../src/data/tasks.ts";
import {
  DEFAULT_HOLDOUT_LAST,
  defaultHoldoutLast,
  EXPERIMENT_DEFAULTS,
  ExperimentError,
  runExperiment,
} from "../src/experiment.ts";

const classes = (n: number) => Array.from({ length: n }, (_, i) => `c${i}`);

Deno.test("experiment holds out 3 tasks where the family keeps 2 training tasks, else fewer", () => {
  assert.equal(DEFAULT_HOLDOUT_LAST, 3);
  assert.equal("holdoutLast" in EXPERIMENT_DEFAULTS, false);
  const cases: [string, number, number][] = [
    ["one_vs_anchor", 10, 3], // 9 tasks: 6 train
    ["pairs_reversed", 10, 3], // 10 tasks: 7 train, each held-out task's forward twin among them
    ["all_pairs", 10, 3],
    ["one_vs_anchor", 5, 2], // 4 tasks: 3 would leave 1
    ["pairs_reversed", 4, 2], // 4 tasks
    ["one_vs_anchor", 3, 1], // 2 tasks
    ["all_pairs", 3, 3], // 6 tasks: 3 held out, 1 twin excluded, 2 train
    ["one_vs_anchor", 2, 1], // 1 task: nothing fits; the family's own error names it
  ];
  for (const [family, n, expected] of cases) {
    const k = defaultHoldoutLast(family, classes(n));
    assert.equal(k, expected, `${family} of ${n} classes`);
    if (n > 2) {
      const train = makeFamily(family, classes(n), { holdoutLast: k }).train.length;
      assert.ok(train >= 2 || k === 1, `${family} of ${n} classes: ${train} training tasks`);
    }
  }
  assert.equal(defaultHoldoutLast("nope", classes(10)), 1);
});

Deno.test("runExperiment trains with the resolved default", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir();
  // Stopped at the first training step: the run folder records what training was given.
  const controller = new AbortController();
  await assert.rejects(
    runExperiment(gpu, {
      ...EXPERIMENT_DEFAULTS,
      name: "exp1",
      profile: "smoke",
      shots: [0],
      ablations: false,
      train: { logEvery: 1 },
      out,
    }, {
      signal: controller.signal,
      onEvent: (e) => {
        if (e.text.startsWith("training train: step")) controller.abort();
      },
    }),
    (e: Error) => e instanceof ExperimentError && /Stopped at training step/.test(e.message),
  );
  const info = JSON.parse(await Deno.readTextFile(join(out, "train", "checkpoint.json")));
  assert.equal(info.options.holdoutLast, 3);
  assert.deepEqual(info.state.family.heldOut, [6, 7, 8]);
  await Deno.remove(out, { recursive: true });
});
