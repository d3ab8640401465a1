/**
 * Few-shot results over random seeds, on results.json files the test writes (no training): a
 * few-shot sweep plan expands into cells and keeps to its own options; the statistics of two seeds
 * are the hand-computed ones (each seed's mean over its episodes, then the t interval over the
 * seeds) in the seed summary, the sweep report and `report --out`; one seed's interval is over its
 * paired episodes and says so.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { FewShotResults, FewShotRow } from "../src/fewshot/experiment.ts";
import { isFewShotResults, seedSummary, seedSummaryMarkdown } from "../src/fewshot/report.ts";
import { combineReports, writeReport } from "../src/report.ts";
import { RECORDS } from "../src/sweep/cell.ts";
import { FEWSHOT_EXPERIMENT, fewShotRules } from "../src/sweep/fewshot.ts";
import { cellDir, expandCells, parsePlan, writeSweep } from "../src/sweep/plan.ts";
import { writeSweepReport } from "../src/sweep/report.ts";
import { mean, sampleStd } from "../src/stats.ts";

/** Student t quantiles at 0.975 (published tables): 1 and 3 degrees of freedom. */
const T1 = 12.706204736;
const T3 = 3.182446305;

const close = (actual: number, expected: number, what: string) =>
  assert.ok(Math.abs(actual - expected) < 1e-6, `${what}: ${actual}, expected ${expected}`);

function row(method: string, values: number[]): FewShotRow {
  return {
    method,
    ways: 5,
    shots: 1,
    accuracy: mean(values),
    ci95: 1.96 * sampleStd(values) / Math.sqrt(values.length),
    episodes: values.length,
    chosen: { lr: 0.01, steps: 10, validationAccuracy: 0.5 },
    trainable: 100,
    values,
    seconds: 1,
  };
}

/** A results.json of `experiment fewshot` on Omniglot 5-way 1-shot with these rows. */
function results(seed: number, rows: FewShotRow[]): FewShotResults {
  return {
    options: {
      dataset: "omniglot",
      split: "auto",
      rotations: false,
      ways: 5,
      shots: [1],
      queries: 1,
      episodes: 4,
      profile: "smoke",
      trainings: ["meta"],
      methods: ["z", "full", "protonet"],
      seed,
      out: `runs/s${seed}`,
    },
    settings: { width: 8, steps: 30 } as FewShotResults["settings"],
    command: `deno task experiment fewshot --seed ${seed}`,
    commit: "test",
    adapter: "test",
    dataset: "omniglot (test)",
    split: { rule: "by alphabet", train: [0, 1], validation: [2], test: [3, 4, 5, 6, 7] },
    sizes: { generator: 10, network: 20 },
    phases: {},
    trainingLoss: {},
    rows,
    seconds: 1,
  };
}

// Per seed: z's and full's query accuracy on the same 4 episodes (5 queries an episode).
const SEED1 = results(1, [
  row("z (meta)", [1, 0.8, 0.6, 1]),
  row("full", [0.6, 0.6, 0.4, 0.6]),
  row("protonet", [1, 1, 0.8, 1]),
]);
const SEED2 = results(2, [
  row("z (meta)", [0.8, 0.8, 1, 0.6]),
  row("full", [0.6, 0.8, 0.6, 0.4]),
  row("protonet", [1, 1, 1, 1]),
]);

Deno.test("a few-shot plan expands over seeds and shots, and keeps to its own options", () => {
  const check = (key: string, value: unknown) =>
    ["ways", "shots", "episodes", "profile", "seed", "methods"].includes(key)
      ? (key === "ways" && typeof value !== "number" ? "expected a number" : undefined)
      : `unknown option '${key}'`;
  const plan = (data: unknown) =>
    parsePlan(data, {
      experiments: ["exp1", "exp2"],
      check: () => undefined,
      separate: { [FEWSHOT_EXPERIMENT]: fewShotRules(check) },
      source: "plan.json",
    });
  const cells = expandCells(plan({
    experiment: "fewshot",
    options: {
      ways: 5,
      shots: [[1], [5]],
      episodes: 600,
      profile: "long",
      methods: [["z", "protonet"]],
      seed: [1, 2, 3],
    },
  }));
  assert.deepEqual(cells.map((c) => c.name), [
    "fewshot_shots-1_seed-1",
    "fewshot_shots-1_seed-2",
    "fewshot_shots-1_seed-3",
    "fewshot_shots-5_seed-1",
    "fewshot_shots-5_seed-2",
    "fewshot_shots-5_seed-3",
  ]);
  assert.deepEqual(cells[4]!.values, {
    ways: 5,
    shots: [5],
    episodes: 600,
    profile: "long",
    methods: ["z", "protonet"],
    seed: 2,
  });
  assert.ok(cells.every((c) => c.experiment === "fewshot"));
  const cases: [unknown, RegExp][] = [
    [{ experiment: ["fewshot", "exp1"] }, /"fewshot" takes options of its own.*with exp1/],
    [{ experiment: "exp3" }, /experiment "exp3" is not one of exp1, exp2, fewshot/],
    [{ experiment: "fewshot", options: { lr: 0.1 } }, /options\.lr\[0\]: unknown option 'lr'/],
    [{ experiment: "fewshot", options: { ways: ["5"] } }, /options\.ways\[0\]: expected a number/],
    [{ experiment: "fewshot", options: { shots: [1, 5] } }, /options\.shots takes lists/],
    [{ experiment: "fewshot", options: { shots: [[0]] } }, /options\.shots\[0\]: .*>= 1/],
    [{ experiment: "fewshot", options: { methods: [[]] } }, /options\.methods\[0\]: .*empty/],
    [
      { experiment: "fewshot", options: { methods: [["z", "maml"]] } },
      /options\.methods\[0\]: option 'methods' lists "maml"; expected some of z, full/,
    ],
  ];
  for (const [data, message] of cases) assert.throws(() => plan(data), message);
});

Deno.test("two seeds: each seed's mean over its episodes, then the t interval over the seeds", () => {
  const summary = seedSummary([SEED2, SEED1]);
  assert.deepEqual(summary.seeds, [1, 2]);
  // z (meta): seeds 0.85 and 0.80; mean 0.825, std 0.0353553, t(1) x std / sqrt(2).
  const z = summary.accuracy.find((a) => a.method === "z (meta)")!;
  assert.equal(z.interval.unit, "seeds");
  assert.equal(z.interval.n, 2);
  close(z.interval.estimate, 0.825, "z mean");
  close(z.interval.lo, 0.825 - T1 * 0.025, "z lo");
  close(z.interval.hi, 0.825 + T1 * 0.025, "z hi");
  assert.deepEqual(z.seeds.map((s) => s.seed), [1, 2]);
  // z - full: seed 1 differs by 0.30 on average over its episodes, seed 2 by 0.20.
  const d = summary.differences.find((x) => x.a === "z (meta)" && x.b === "full")!;
  assert.equal(d.interval.unit, "seeds");
  assert.equal(d.interval.n, 2);
  close(d.interval.estimate, 0.25, "z - full");
  close(d.interval.lo, 0.25 - T1 * 0.05, "z - full lo");
  close(d.interval.hi, 0.25 + T1 * 0.05, "z - full hi");
  assert.deepEqual(Object.fromEntries(summary.targets.map((t) => [t.name, t.verdict])), {
    "z (meta) - full >= 10 points": "not established",
    "z (meta) - protonet >= 0": "not established",
    "z (meta) >= 95% (Omniglot 5-way 1-shot)": "not established",
  });
  const md = seedSummaryMarkdown(summary).join("\n");
  assert.match(md, /2 random seeds \(1, 2\): the unit is the seed/);
  assert.match(md, /\| z \(meta\) - full \| 1 \| 25\.00 \[-38\.53, 88\.53\] \| 2 seeds \|/);
  assert.match(
    md,
    /\| z \(meta\) \| 5 \| 1 \| 82\.50 \[50\.73, 114\.27\] \| 2 seeds \| 1: 85\.00 ± /,
  );
});

Deno.test("one seed: the interval is over its episodes, paired per episode, and says so", () => {
  const summary = seedSummary([SEED1]);
  const d = summary.differences.find((x) => x.a === "z (meta)" && x.b === "full")!;
  // Per-episode differences 0.4, 0.2, 0.2, 0.4: mean 0.3, std 0.11547, t(3) x std / sqrt(4).
  assert.equal(d.interval.unit, "episodes");
  assert.equal(d.interval.n, 4);
  close(d.interval.estimate, 0.3, "z - full");
  const half = T3 * sampleStd([0.4, 0.2, 0.2, 0.4]) / 2;
  close(d.interval.lo, 0.3 - half, "lo");
  close(d.interval.hi, 0.3 + half, "hi");
  assert.equal(summary.targets.find((t) => t.name.endsWith("full >= 10 points"))!.verdict, "met");
  // ProtoNet is at least z on every episode, yet 4 episodes do not place z - protonet below 0.
  assert.equal(
    summary.targets.find((t) => t.name.includes("protonet"))!.verdict,
    "not established",
  );
  const md = seedSummaryMarkdown(summary).join("\n");
  assert.match(md, /One random seed \(1\): every interval is over its 4 test episodes/);
  assert.match(
    md,
    /\| z \(meta\) - full \| 1 \| 30\.00 \[11\.63, 48\.37\] \| 4 episodes, 1 seed \|/,
  );
});

Deno.test("report aggregates few-shot seeds: of run folders (--out) and of a sweep folder", async () => {
  const dir = await Deno.makeTempDir({ prefix: "supernet-fewshot-report-" });
  const runs = [SEED1, SEED2].map((r) => join(dir, `run-${r.options.seed}`));
  for (const [i, r] of [SEED1, SEED2].entries()) {
    await Deno.mkdir(runs[i]!, { recursive: true });
    await Deno.writeTextFile(join(runs[i]!, "results.json"), JSON.stringify(r));
  }
  // One folder: its own report, whose paired differences are over its episodes.
  const own = await Deno.readTextFile(await writeReport(runs[0]!));
  assert.match(own, /^# Few-shot: 5-way 1-shot on omniglot/);
  assert.match(
    own,
    /\| z \(meta\) - full \| 1 \| 30\.00 \[11\.63, 48\.37\] \| 4 episodes, 1 seed \|/,
  );
  // Both folders into one file: the seeds are aggregated, and each run's results.json is copied.
  const combined = await Deno.readTextFile(await combineReports(runs, join(dir, "all.md")));
  assert.match(combined, /## Few-shot over random seeds/);
  assert.match(combined, /### omniglot 5-way 1-shot, profile smoke/);
  assert.match(combined, /\| z \(meta\) - full \| 1 \| 25\.00 \[-38\.53, 88\.53\] \| 2 seeds \|/);
  assert.doesNotMatch(combined, /CIFAR-100/, "the binary experiments' note is theirs only");
  const copied = JSON.parse(await Deno.readTextFile(join(dir, "all", "run-2", "results.json")));
  assert.ok(isFewShotResults(copied));
  assert.deepEqual(copied.rows[0]!.values, SEED2.rows[0]!.values);

  // A sweep folder with the two seeds as done cells.
  const sweep = join(dir, "sweep");
  const content = parsePlan({ experiment: "fewshot", options: { seed: [1, 2] } }, {
    experiments: [],
    check: () => undefined,
    separate: { [FEWSHOT_EXPERIMENT]: fewShotRules(() => undefined) },
    source: "plan.json",
  });
  const cells = expandCells(content);
  await writeSweep(sweep, { path: join(dir, "plan.json"), content, cells });
  for (const [i, cell] of cells.entries()) {
    const at = cellDir(sweep, cell);
    await Deno.mkdir(at, { recursive: true });
    await Deno.writeTextFile(join(at, RECORDS.cell), JSON.stringify(cell));
    await Deno.writeTextFile(join(at, RECORDS.results), JSON.stringify([SEED1, SEED2][i]));
    await Deno.writeTextFile(
      join(at, RECORDS.done),
      JSON.stringify({ finished: "", seconds: 1, host: "h" }),
    );
  }
  const report = await writeSweepReport(sweep);
  assert.equal(report.groups.length, 0);
  const [group] = report.fewShot!;
  assert.equal(group!.label, "fewshot");
  const d = group!.summary.differences.find((x) => x.a === "z (meta)" && x.b === "full")!;
  close(d.interval.lo, 0.25 - T1 * 0.05, "sweep z - full lo");
  assert.match(report.table.join("\n"), /fewshot\s+z \(meta\)\s+1\s+82\.50% \[50\.73%, 114\.27%\]/);
  const md = await Deno.readTextFile(report.path);
  assert.match(md, /^# Sweep sweep/);
  assert.match(md, /\| z \(meta\) - full \| 1 \| 25\.00 \[-38\.53, 88\.53\] \| 2 seeds \|/);
  assert.match(
    md,
    /\| fewshot_seed-2 \| 2 \| \[results\.json\]\(cells\/fewshot_seed-2\/results\.json\) \|/,
  );
  await Deno.remove(dir, { recursive: true });
});
