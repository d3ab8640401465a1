/**
 * The experiment pipeline end to end at the smoke profile (numbers meaningless, seconds of work):
 * results.json holds every method, control, shot and ablation; the report and its plots are
 * written; and the report's plots are well-formed SVG.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { getGpu } from "../src/gpu/device.ts";
import {
  EXPERIMENT_DEFAULTS,
  ExperimentError,
  type ExperimentOptions,
  runExperiment,
  TRAINED_Z,
} from "../src/experiment.ts";
import { lineChart, writeReport } from "../src/report.ts";
import { runBaseline } from "../src/baseline.ts";

Deno.test("exp2 at the smoke profile writes results, report and plots", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir();
  const options: ExperimentOptions = {
    ...EXPERIMENT_DEFAULTS,
    name: "exp2",
    profile: "smoke",
    holdoutLast: 1,
    shots: [1, 0],
    subsets: 2,
    out,
  };
  const results = await runExperiment(gpu, options);
  assert.equal(results.family, "pairs_reversed");
  assert.equal(results.heldOut.length, 1);
  // The code it came from, each adaptation phase's wall time, and the whole network's budget.
  assert.match(results.commit!, /^([0-9a-f]{7,}(-dirty)?|unknown)$/);
  assert.ok(
    (results.phaseSeconds?.["held-out tasks: every method, batched over 1 task(s)"] ?? -1) > 0,
  );
  assert.deepEqual(results.fullBudget, {
    epochs: 0,
    weightDecays: [0],
    augment: true,
    flip: false,
  });
  const held = results.heldOut[0]!;
  const full = held.methods.find((m) => m.method === "full")!;
  assert.equal(full.imagesSeen, full.stepsRun * 8);
  assert.equal(full.weightDecay, 0);
  assert.deepEqual(
    held.methods.map((m) => m.method),
    ["zero-shot", "z", "z-seed", "head", "full", "finetune", "z-untrained"],
  );
  for (const m of held.methods) {
    assert.ok(Number.isFinite(m.loss) && m.accuracy >= 0 && m.accuracy <= 1);
  }
  const { perTrainingZ, reversedTwinZ, ...controls } = held.controls;
  for (const v of Object.values(controls)) assert.ok(v >= 0 && v <= 1);
  assert.equal(perTrainingZ.length, results.taskCounts.train);
  assert.ok(reversedTwinZ !== undefined && reversedTwinZ >= 0 && reversedTwinZ <= 1);
  assert.deepEqual([...new Set(held.shots.map((s) => s.shots))], [1, 0]);
  for (const s of held.shots) {
    assert.equal(s.subsets, s.shots === 0 ? 1 : 2);
    // Each subset's accuracy is kept, so the report can pair z and full by subset.
    assert.equal(s.values?.length, s.subsets);
    assert.ok(Math.abs(s.accuracy - s.values!.reduce((a, b) => a + b, 0) / s.subsets) < 1e-12);
  }
  // The control of every shots row: the best-fitting trained z, not adapted.
  assert.deepEqual(held.shots.filter((s) => s.method === TRAINED_Z).map((s) => s.shots), [1, 0]);
  assert.ok(held.methods.find((m) => m.method === "finetune")!.forgetting !== undefined);
  assert.deepEqual(results.ablations.map((a) => a.name.split(" ")[0]), [
    "the",
    "+",
    "+",
    "+",
    "+",
    "generator",
    "meta-training",
  ]);
  const report = await Deno.readTextFile(await writeReport(out));
  assert.match(report, /## Verdict/);
  // One held-out task: no interval over tasks, so nothing is established either way.
  assert.match(report, /target: z >= full - 1 point\): not established\.\*\*/);
  assert.match(report, /no interval from 1 held-out task/);
  assert.match(report, /over 2 paired subsets of the 1 held-out task/);
  assert.match(report, /oracle: chosen on test images/);
  assert.match(report, /## What made the difference/);
  assert.match(report, /Control: the trained z that fits the 1 image\(s\) per class best/);
  assert.match(report, /\| z \| 100 \|/);
  for (const svg of ["accuracy.svg", "loss.svg", "shots.svg"]) {
    assert.match(await Deno.readTextFile(join(out, svg)), /^<svg[^]*<\/svg>\n$/);
  }
  // The whole network measured again alone (experiment --baseline), without training the
  // generator: the same tasks, validation slice, seed and budget give the very same numbers.
  const again = await runBaseline(gpu, { ...options, baseline: true });
  assert.deepEqual({ ...again.heldOut[0]!.full, seconds: 0 }, { ...full, seconds: 0 });
  assert.deepEqual(again.fullBudget, results.fullBudget);
  const paired = await Deno.readTextFile(await writeReport(out));
  assert.match(paired, /### The whole network measured again/);
  assert.match(
    paired,
    /z - full converged: [+-]\d+\.\d\d points; no interval from 1 held-out task/,
  );
  await Deno.remove(out, { recursive: true });
});

Deno.test("line charts place points inside the plot and escape labels", () => {
  const svg = lineChart([{ label: "a<b", points: [[0, 0], [10, 1]] }], {
    title: "t",
    xLabel: "x",
    yLabel: "y",
    yRange: [0, 1],
  });
  assert.match(svg, /a&lt;b/);
  const circles = [...svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"/g)].map((
    m,
  ) => [+m[1]!, +m[2]!]);
  assert.deepEqual(circles, [[64, 348], [470, 40]]);
});

Deno.test("report names the missing results file", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(() => writeReport(dir), /results\.json: not found/);
  await Deno.remove(dir);
});

/** Experiment 1 at the smoke profile, without few-shot rows or ablations, into `out`. */
function smokeExp1(out: string, changes: Partial<ExperimentOptions> = {}): ExperimentOptions {
  return {
    ...EXPERIMENT_DEFAULTS,
    name: "exp1",
    profile: "smoke",
    holdoutLast: 1,
    shots: [0],
    ablations: false,
    out,
    ...changes,
  };
}

/** Modification time of a file, in ms. */
async function mtime(path: string): Promise<number> {
  return (await Deno.stat(path)).mtime!.getTime();
}

Deno.test("--resume keeps finished training and adaptation phases and runs only the rest", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir();
  const base = smokeExp1(out);
  const first = await runExperiment(gpu, base);
  const model = join(out, "train", "model.safetensors");
  const main = join(out, "adapt", "adapt.json");
  const before = [await mtime(model), await mtime(main)];
  const said: string[] = [];
  const second = await runExperiment(gpu, { ...base, shots: [1, 0], subsets: 1, resume: true }, {
    onEvent: (e) => said.push(e.text),
  });
  assert.ok(said.includes("training train: kept from an earlier run (6 steps)"), said.join("\n"));
  assert.ok(said.some((t) => /^held-out tasks: every method.*: kept/.test(t)), said.join("\n"));
  assert.ok(said.includes("1 image(s) per class, subset 1/1"), said.join("\n"));
  assert.deepEqual([await mtime(model), await mtime(main)], before);
  assert.deepEqual(second.heldOut[0]!.methods, first.heldOut[0]!.methods);
  assert.deepEqual([...new Set(second.heldOut[0]!.shots.map((s) => s.shots))], [1, 0]);
  assert.ok(second.trainSeconds > 0 && second.trainSeconds <= first.trainSeconds);
  // A training run of other options is an error, and it stays as it was.
  await assert.rejects(
    runExperiment(gpu, { ...base, train: { steps: 7 }, resume: true }),
    (e: Error) =>
      e instanceof ExperimentError &&
      e.message.includes("holds a training run of other options (steps 6, not 7)"),
  );
  assert.equal(await mtime(model), before[0]);
  // A phase written before its generator's last checkpoint (the generator was trained again
  // since) is stale: it runs again.
  await Deno.utime(main, new Date(before[0]! - 60_000), new Date(before[0]! - 60_000));
  said.length = 0;
  await runExperiment(gpu, { ...base, resume: true }, { onEvent: (e) => said.push(e.text) });
  assert.ok(said.includes("held-out tasks: every method, batched over 1 task(s)"), said.join("\n"));
  assert.ok(await mtime(main) > before[0]!);
  await Deno.remove(out, { recursive: true });
});

Deno.test("a stopped experiment goes on from its last checkpoint with --resume", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir();
  const base = smokeExp1(out, { train: { logEvery: 1 } });
  const controller = new AbortController();
  await assert.rejects(
    runExperiment(gpu, base, {
      signal: controller.signal,
      onEvent: (e) => {
        if (e.text.startsWith("training train: step")) controller.abort();
      },
    }),
    (e: Error) => e instanceof ExperimentError && /Stopped at training step 1 of 6/.test(e.message),
  );
  const said: string[] = [];
  const results = await runExperiment(gpu, { ...base, resume: true }, {
    onEvent: (e) => said.push(e.text),
  });
  assert.ok(said.includes("training train: continuing from step 1 of 6"), said.join("\n"));
  const info = JSON.parse(await Deno.readTextFile(join(out, "train", "checkpoint.json")));
  assert.equal(info.step, 6);
  assert.ok(info.seconds > 0);
  assert.equal(results.heldOut.length, 1);
  await Deno.remove(out, { recursive: true });
});
