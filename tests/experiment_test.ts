/**
 * The experiment pipeline end to end at the smoke profile (numbers meaningless, seconds of work):
 * results.json holds every method, control, shot and ablation; the report and its plots are
 * written; and the report's plots are well-formed SVG.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { getGpu } from "../src/gpu/device.ts";
import { EXPERIMENT_DEFAULTS, runExperiment } from "../src/experiment.ts";
import { lineChart, writeReport } from "../src/report.ts";

Deno.test("exp2 at the smoke profile writes results, report and plots", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir();
  const results = await runExperiment(gpu, {
    ...EXPERIMENT_DEFAULTS,
    name: "exp2",
    profile: "smoke",
    shots: [1, 0],
    subsets: 2,
    out,
  });
  assert.equal(results.family, "pairs_reversed");
  assert.equal(results.heldOut.length, 1);
  const held = results.heldOut[0]!;
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
  for (const s of held.shots) assert.equal(s.subsets, s.shots === 0 ? 1 : 2);
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
  assert.match(report, /target: z >= full - 1 point\): (met|missed)/);
  assert.match(report, /oracle: chosen on test images/);
  assert.match(report, /## What made the difference/);
  assert.match(report, /\| z \| 100 \|/);
  for (const svg of ["accuracy.svg", "loss.svg", "shots.svg"]) {
    assert.match(await Deno.readTextFile(join(out, svg)), /^<svg[^]*<\/svg>\n$/);
  }
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
