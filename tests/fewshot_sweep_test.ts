/**
 * A few-shot sweep end to end through the command line, at a tiny size on MNIST (2-way episodes,
 * two seeds, z and full): the cells run `experiment fewshot`, their results.json keep every test
 * episode's accuracy, from which the written 95% interval and the report's paired interval over
 * the seeds are recomputed; a rerun skips the cells that are done.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { FewShotResults } from "../src/fewshot/experiment.ts";
import { hierarchicalPaired, mean, sampleStd } from "../src/stats.ts";
import { runMain } from "./util.ts";

Deno.test("a few-shot sweep over two seeds runs, resumes and is reported over the seeds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "supernet-fewshot-sweep-" });
  const planPath = join(dir, "plan.json");
  // The tiny options of tests/fewshot_test.ts, fewer episodes and methods: seconds a cell.
  await Deno.writeTextFile(
    planPath,
    JSON.stringify({
      experiment: "fewshot",
      options: {
        dataset: "mnist",
        ways: 2,
        shots: [[1]],
        queries: 2,
        episodes: 4,
        profile: "smoke",
        steps: 2,
        chunk: 4,
        trainings: [["meta"]],
        methods: [["z", "full"]],
        seed: [1, 2],
      },
    }),
  );
  const out = join(dir, "sweep");
  const cli = (args: string[]) => runMain(args, { allow: ["--allow-run", "--allow-sys=hostname"] });
  const first = await cli(["sweep", planPath, "--out", out, "--parallel", "2", "--quiet"]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /2 of 2 cell\(s\) done/);

  const runs: FewShotResults[] = [];
  for (const seed of [1, 2]) {
    const cell = join(out, "cells", `fewshot_seed-${seed}`);
    const r = JSON.parse(await Deno.readTextFile(join(cell, "results.json"))) as FewShotResults;
    assert.equal(r.options.seed, seed);
    assert.deepEqual(r.rows.map((x) => x.method), ["z (meta)", "full"]);
    for (const row of r.rows) {
      // Every episode's accuracy is kept, and the written numbers follow from them.
      assert.equal(row.values.length, 4);
      assert.ok(Math.abs(row.accuracy - mean(row.values)) < 1e-12);
      const ci95 = 1.96 * sampleStd(row.values) / 2;
      assert.ok(Math.abs(row.ci95 - ci95) < 1e-12, `${row.method}: ${row.ci95} vs ${ci95}`);
    }
    assert.match(await Deno.readTextFile(join(cell, "report.md")), /\| z \(meta\) - full \| 1 \|/);
    runs.push(r);
  }

  const again = await cli(["sweep", planPath, "--out", out, "--quiet"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /fewshot_seed-1\s+skip \(done\)/);
  assert.match(again.stdout, /fewshot_seed-2\s+skip \(done\)/);

  const report = await runMain(["report", out]);
  assert.equal(report.code, 0, report.stderr);
  assert.match(report.stdout, /fewshot\s+z \(meta\)\s+1\s+\d+\.\d\d%/);
  // z - full: each seed's mean difference over its episodes, then the t interval over the seeds.
  const d = hierarchicalPaired(
    runs.flatMap((r) =>
      r.rows[0]!.values.map((a, i) => ({
        unit: String(r.options.seed),
        a,
        b: r.rows[1]!.values[i]!,
      }))
    ),
  );
  const pct = (x: number) => (100 * x).toFixed(2);
  const interval = Number.isFinite(d.lo)
    ? `${pct(d.estimate)} [${pct(d.lo)}, ${pct(d.hi)}]`
    : pct(d.estimate);
  const md = await Deno.readTextFile(join(out, "report.md"));
  assert.ok(
    md.includes(`| z (meta) - full | 1 | ${interval} | 2 seeds |`),
    `expected z (meta) - full ${interval} over 2 seeds in:\n${md}`,
  );
  await Deno.remove(dir, { recursive: true });
});
