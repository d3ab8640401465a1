/**
 * report.md of `experiment fewshot`: our rows (mean accuracy over test episodes with the 95%
 * interval, as the papers report) beside published numbers, the paired differences between our
 * methods over the same episodes, and the verdicts of the targets; and the same statistics over
 * the random seeds of several runs (a sweep's cells, or `report --out`).
 *
 * The unit of every interval is said where it is printed. One run: its test episodes, which are
 * the same for every method, so a difference is paired per episode and its t interval is over the
 * episodes. Several seeds: each seed's mean over its own episodes (a seed draws its own episodes),
 * then the t interval over the seeds (`hierarchicalPaired` with the seed as the unit), so episodes
 * of one seed never count as independent replicates of the training.
 *
 * @module
 */
import { join } from "node:path";
import { writeAtomic } from "../safetensors.ts";
import {
  hierarchicalPaired,
  type Interval,
  mean,
  meanInterval,
  pairedInterval,
  type Verdict,
  verdict,
} from "../stats.ts";
import type { FewShotResults, FewShotRow } from "./experiment.ts";

/** A published result: accuracy and interval in percent, as printed in the paper. */
export interface Published {
  /** Method and backbone. */
  method: string;
  /** Where it was reported. */
  source: string;
  /** Dataset key: omniglot or cifar-fs. */
  dataset: "omniglot" | "cifar-fs";
  /** N. */
  ways: number;
  /** K. */
  shots: number;
  /** Accuracy in percent. */
  accuracy: number;
  /** The paper's 95% interval in percent (absent where it printed none). */
  ci95?: number;
}

/**
 * Numbers as printed in the papers (conv4 backbones unless said). Omniglot: the full set, 1,200
 * training characters with rotations, 28x28; CIFAR-FS: 64/16/20 classes, 32x32.
 */
export const PUBLISHED: readonly Published[] = [
  ...[[5, 1, 98.7, 0.4], [5, 5, 99.9, 0.1], [20, 1, 95.8, 0.3], [20, 5, 98.9, 0.2]].map((
    [ways, shots, accuracy, ci95],
  ) => ({
    method: "MAML",
    source: "Finn, Abbeel and Levine, ICML 2017, Table 1",
    dataset: "omniglot" as const,
    ways: ways!,
    shots: shots!,
    accuracy: accuracy!,
    ci95,
  })),
  ...[[5, 1, 98.8], [5, 5, 99.7], [20, 1, 96.0], [20, 5, 98.9]].map(([ways, shots, accuracy]) => ({
    method: "ProtoNet",
    source: "Snell, Swersky and Zemel, NeurIPS 2017, Table 1",
    dataset: "omniglot" as const,
    ways: ways!,
    shots: shots!,
    accuracy: accuracy!,
  })),
  ...[[5, 1, 58.9, 1.9], [5, 5, 71.5, 1.0]].map(([ways, shots, accuracy, ci95]) => ({
    method: "MAML",
    source: "as reported by Bertinetto et al., ICLR 2019, Table 1",
    dataset: "cifar-fs" as const,
    ways: ways!,
    shots: shots!,
    accuracy: accuracy!,
    ci95,
  })),
  ...[[5, 1, 55.5, 0.7], [5, 5, 72.0, 0.6]].map(([ways, shots, accuracy, ci95]) => ({
    method: "ProtoNet",
    source: "as reported by Bertinetto et al., ICLR 2019, Table 1",
    dataset: "cifar-fs" as const,
    ways: ways!,
    shots: shots!,
    accuracy: accuracy!,
    ci95,
  })),
  ...[[5, 1, 71.5, 0.8], [5, 5, 86.0, 0.5]].map(([ways, shots, accuracy, ci95]) => ({
    method: "Pretrained + linear (ResNet-12, not conv4)",
    source: "Tian et al., ECCV 2020, Table 1",
    dataset: "cifar-fs" as const,
    ways: ways!,
    shots: shots!,
    accuracy: accuracy!,
    ci95,
  })),
];

/**
 * What the validation classes chose, as the table prints it: `lr, steps`; with the L2 strength
 * of `pretrained`'s logistic regression; `none` for a method that learns nothing per episode.
 */
function chosenText(chosen: FewShotRow["chosen"]): string {
  if (chosen.lr === 0 && chosen.steps === 0) return "none";
  return `${chosen.lr}, ${chosen.steps}${chosen.l2 !== undefined ? `, L2 ${chosen.l2}` : ""}`;
}

/** Percent with two decimals. */
function pct(x: number): string {
  return Number.isFinite(x) ? (100 * x).toFixed(2) : "-";
}

/** Whether parsed JSON is a results.json of `experiment fewshot` (rows of per-episode values). */
export function isFewShotResults(data: unknown): data is FewShotResults {
  const d = data as Partial<FewShotResults> | null;
  return typeof d === "object" && d !== null && Array.isArray(d.rows) &&
    typeof d.options?.ways === "number";
}

/** An estimate with its 95% Student-t interval and the unit the interval is over. */
export interface UnitInterval extends Interval {
  /**
   * `seeds`: each seed's mean over its test episodes, then the interval over the seeds (n seeds);
   * `episodes`: one seed, the interval over its test episodes (n episodes).
   */
  unit: "seeds" | "episodes";
  /** Test episodes per seed (the most of any seed). */
  episodes: number;
}

/** One method at one (ways, shots) over the seeds of a group of runs. */
export interface SeedAccuracy {
  /** The row's method. */
  method: string;
  /** N. */
  ways: number;
  /** K. */
  shots: number;
  /** Per run, in seed order: its mean accuracy and the papers' interval over its episodes. */
  seeds: { seed: number; accuracy: number; ci95: number; episodes: number }[];
  /** The mean accuracy with its interval: over seeds, or over the episodes of one seed. */
  interval: UnitInterval;
}

/** A z method against another method at one (ways, shots), paired over the same episodes. */
export interface SeedDifference {
  /** The z method (`z (table)`, `z (meta)`). */
  a: string;
  /** The other method. */
  b: string;
  /** N. */
  ways: number;
  /** K. */
  shots: number;
  /** a - b: over seeds (each seed's mean difference over its episodes), or over one seed's episodes. */
  interval: UnitInterval;
}

/** A target of the issue and what the interval says about it. */
export interface SeedTarget {
  /** In words, e.g. `z (meta) - protonet >= 0`. */
  name: string;
  /** K. */
  shots: number;
  /** The interval judged. */
  interval: UnitInterval;
  /** The bound the whole interval must clear (fraction). */
  atLeast: number;
  /** met, not established or missed. */
  verdict: Verdict;
}

/** Our methods over the seeds of runs that differ only by seed. */
export interface SeedSummary {
  /** The seeds, in order (runs with the same seed count as one unit). */
  seeds: number[];
  /** Every method at every (ways, shots). */
  accuracy: SeedAccuracy[];
  /** Every z method against every other method, paired per episode. */
  differences: SeedDifference[];
  /** The issue's targets where they apply. */
  targets: SeedTarget[];
}

const isZ = (method: string) => method === "z" || method.startsWith("z (");

/**
 * The statistics of runs that differ only by seed (see the module doc for the units). A method
 * and (ways, shots) that some runs lack is summarised over the runs that have it.
 */
export function seedSummary(runs: readonly FewShotResults[]): SeedSummary {
  const seedOf = (r: FewShotResults) => r.options.seed;
  const ordered = [...runs].sort((p, q) => seedOf(p) - seedOf(q));
  const seeds = [...new Set(ordered.map(seedOf))];
  const keys = new Map<string, { method: string; ways: number; shots: number }>();
  for (const r of ordered) {
    for (const row of r.rows) {
      keys.set(JSON.stringify([row.method, row.ways, row.shots]), row);
    }
  }
  const rowsOf = (method: string, ways: number, shots: number) =>
    ordered.flatMap((r) =>
      r.rows.filter((x) => x.method === method && x.ways === ways && x.shots === shots)
        .map((row) => ({ seed: seedOf(r), row }))
    );
  const accuracy: SeedAccuracy[] = [...keys.values()].map(({ method, ways, shots }) => {
    const found = rowsOf(method, ways, shots);
    const bySeed = new Map<number, number[]>();
    for (const f of found) bySeed.set(f.seed, [...(bySeed.get(f.seed) ?? []), f.row.accuracy]);
    const episodes = Math.max(...found.map((f) => f.row.values.length));
    const interval: UnitInterval = bySeed.size >= 2
      ? { ...meanInterval([...bySeed.values()].map(mean)), unit: "seeds", episodes }
      : { ...meanInterval(found.flatMap((f) => f.row.values)), unit: "episodes", episodes };
    return {
      method,
      ways,
      shots,
      seeds: found.map((f) => ({
        seed: f.seed,
        accuracy: f.row.accuracy,
        ci95: f.row.ci95 ?? NaN,
        episodes: f.row.values.length,
      })),
      interval,
    };
  });
  const differences: SeedDifference[] = [];
  for (const za of accuracy.filter((x) => isZ(x.method))) {
    const others = accuracy.filter((x) =>
      x.ways === za.ways && x.shots === za.shots && x.method !== za.method &&
      (!isZ(x.method) || accuracy.indexOf(x) > accuracy.indexOf(za))
    );
    for (const other of others) {
      const pairs = ordered.flatMap((r) => {
        const find = (m: string) =>
          r.rows.find((x) => x.method === m && x.ways === za.ways && x.shots === za.shots);
        const [a, b] = [find(za.method), find(other.method)];
        return a && b && a.values.length === b.values.length
          ? a.values.map((v, i) => ({ unit: String(seedOf(r)), a: v, b: b.values[i]! }))
          : [];
      });
      const units = new Set(pairs.map((p) => p.unit)).size;
      if (units === 0) continue;
      const episodes = Math.max(za.interval.episodes, other.interval.episodes);
      const interval: UnitInterval = units >= 2
        ? { ...hierarchicalPaired(pairs), unit: "seeds", episodes }
        : {
          ...pairedInterval(pairs.map((p) => p.a), pairs.map((p) => p.b)),
          unit: "episodes",
          episodes,
        };
      differences.push({ a: za.method, b: other.method, ways: za.ways, shots: za.shots, interval });
    }
  }
  return { seeds, accuracy, differences, targets: targetsOf(ordered[0], accuracy, differences) };
}

/**
 * The issue's targets: every z method at least ProtoNet (z - protonet >= 0), at least 10 points
 * above the whole network from scratch at 1 shot, and at least 95% on Omniglot 5-way 1-shot.
 */
function targetsOf(
  first: FewShotResults | undefined,
  accuracy: readonly SeedAccuracy[],
  differences: readonly SeedDifference[],
): SeedTarget[] {
  const targets: SeedTarget[] = [];
  const add = (name: string, shots: number, interval: UnitInterval, atLeast: number) =>
    targets.push({ name, shots, interval, atLeast, verdict: verdict(interval, { atLeast }) });
  for (const d of differences) {
    if (d.b === "protonet") add(`${d.a} - protonet >= 0`, d.shots, d.interval, 0);
    if (d.b === "full" && d.shots === 1) add(`${d.a} - full >= 10 points`, 1, d.interval, 0.1);
  }
  if (first?.options.dataset === "omniglot") {
    for (const a of accuracy) {
      if (isZ(a.method) && a.ways === 5 && a.shots === 1) {
        add(`${a.method} >= 95% (Omniglot 5-way 1-shot)`, 1, a.interval, 0.95);
      }
    }
  }
  return targets;
}

/** `estimate [lo, hi]` in points, or the estimate alone where there is no interval. */
function bracket(i: Interval): string {
  return Number.isFinite(i.lo)
    ? `${pct(i.estimate)} [${pct(i.lo)}, ${pct(i.hi)}]`
    : pct(i.estimate);
}

/** The unit of an interval in a few words, e.g. `3 seeds` or `600 episodes, 1 seed`. */
function unitText(i: UnitInterval): string {
  return i.unit === "seeds" ? `${i.n} seeds` : `${i.n} episodes, 1 seed`;
}

/**
 * The Markdown of a {@link SeedSummary}: accuracy by method (unless `accuracy` is false, where the
 * caller prints its own), the paired differences of each z method, and the targets, each table
 * naming its unit; `heading` is the level of the tables' headings (default `##`).
 */
export function seedSummaryMarkdown(
  summary: SeedSummary,
  options: { heading?: string; accuracy?: boolean } = {},
): string[] {
  const heading = options.heading ?? "##";
  const one = summary.seeds.length === 1;
  const episodes = Math.max(0, ...summary.accuracy.map((a) => a.interval.episodes));
  const md: string[] = [
    one
      ? `One random seed (${summary.seeds[0]}): every interval is over its ${episodes} test ` +
        "episodes (Student t), and differences are paired per episode (the same episodes for " +
        "every method). It says how well the episodes pin down this one training, not how much " +
        "another seed's training would differ."
      : `${summary.seeds.length} random seeds (${summary.seeds.join(", ")}): the unit is the ` +
        "seed. Each seed's accuracy is its mean over its own test episodes; the mean over seeds " +
        "has the 95% Student t interval over the seeds (n − 1 degrees of freedom). A difference " +
        "is each seed's mean of the per-episode differences (the same episodes for both " +
        "methods), then the t interval over the seeds. The per-seed column is what the papers " +
        "print: the mean over episodes ± 1.96 x std / sqrt(episodes).",
    "",
    ...(options.accuracy === false ? [] : [
      `${heading} Accuracy by method`,
      "",
      "| method | ways | shots | accuracy (%) [95% interval] | unit | per seed: accuracy ± 95% interval over its episodes (episodes) |",
      "| --- | ---: | ---: | ---: | --- | --- |",
      ...summary.accuracy.map((a) =>
        `| ${a.method} | ${a.ways} | ${a.shots} | ${bracket(a.interval)} | ${
          unitText(a.interval)
        } | ${
          a.seeds.map((s) => `${s.seed}: ${pct(s.accuracy)} ± ${pct(s.ci95)} (${s.episodes})`)
            .join("; ")
        } |`
      ),
      "",
    ]),
    `${heading} Paired differences`,
    "",
    "Each z method minus every other method, in points over the same test episodes.",
    "",
    "| difference | shots | points [95% interval] | unit |",
    "| --- | ---: | ---: | --- |",
    ...summary.differences.map((d) =>
      `| ${d.a} - ${d.b} | ${d.shots} | ${bracket(d.interval)} | ${unitText(d.interval)} |`
    ),
    "",
  ];
  if (summary.targets.length > 0) {
    md.push(
      `${heading} Targets`,
      "",
      "Met when the whole 95% interval clears the bound, missed when it lies below it, and " +
        "otherwise not established (also with no interval).",
      "",
      "| target | shots | estimate (points or %) [95% interval] | unit | verdict |",
      "| --- | ---: | ---: | --- | --- |",
      ...summary.targets.map((t) =>
        `| ${t.name} | ${t.shots} | ${bracket(t.interval)} | ${
          unitText(t.interval)
        } | ${t.verdict} |`
      ),
      "",
    );
  }
  return md;
}

/** Options that tell runs apart without changing what they measure, or that are the seed. */
const NOT_GROUPED = new Set(["seed", "out", "chunk", "dataDir", "verify", "resume"]);

/**
 * Runs grouped by everything but the seed (and where their files were): the dataset as read and
 * every other option. Labels name the dataset, ways, shots and profile, and any option that
 * differs between groups.
 */
export function groupRunsBySeed<T extends { results: FewShotResults }>(
  runs: readonly T[],
): { label: string; runs: T[] }[] {
  const kept = (r: FewShotResults) =>
    Object.fromEntries(
      Object.entries(r.options).filter(([k]) => !NOT_GROUPED.has(k)).sort(([p], [q]) =>
        p < q ? -1 : 1
      ),
    );
  const groups = new Map<string, T[]>();
  for (const run of runs) {
    const key = JSON.stringify([run.results.dataset, kept(run.results)]);
    groups.set(key, [...(groups.get(key) ?? []), run]);
  }
  const firsts = [...groups.values()].map((g) => kept(g[0]!.results));
  const varying = [...new Set(firsts.flatMap(Object.keys))].filter((k) =>
    !["dataset", "ways", "shots", "profile"].includes(k) &&
    firsts.some((o) => JSON.stringify(o[k]) !== JSON.stringify(firsts[0]![k]))
  );
  return [...groups.values()].map((list) => {
    const o = list[0]!.results.options;
    const extra = varying.map((k) => `${k}=${JSON.stringify(kept(list[0]!.results)[k])}`);
    return {
      label: [
        `${o.dataset} ${o.ways}-way ${o.shots.join(",")}-shot, profile ${o.profile}`,
        ...extra,
      ]
        .join(", "),
      runs: list,
    };
  });
}

/** Markdown of a results file (see the module doc). */
export function fewShotMarkdown(results: FewShotResults): string {
  const o = results.options;
  const key = o.dataset === "cifar100" ? "cifar-fs" : o.dataset;
  const row = (r: FewShotRow) =>
    `| ${r.method} | ${r.ways} | ${r.shots} | ${pct(r.accuracy)} ± ${
      pct(r.ci95)
    } | ${r.episodes} | ${chosenText(r.chosen)} | ${r.trainable.toLocaleString("en-US")} | ${
      r.seconds.toFixed(0)
    } |`;
  const published = PUBLISHED.filter((p) =>
    p.dataset === key && p.ways === o.ways && o.shots.includes(p.shots)
  );
  return [
    `# Few-shot: ${o.ways}-way ${o.shots.join(", ")}-shot on ${o.dataset}`,
    "",
    `Command: \`${results.command}\``,
    "",
    `Code ${results.commit}; ${results.adapter}; ${results.dataset}.`,
    ...(results.kept
      ? [
        `Kept from an earlier run in the folder (\`--resume\`): ${
          [
            ...results.kept.trainings.map((t) =>
              `training ${t.name} (code ${t.commit}, ${t.seconds.toFixed(0)} s)`
            ),
            ...results.kept.rows,
          ].join("; ")
        }.`,
      ]
      : []),
    `Class split: ${results.split.rule} (${results.split.train.length} training, ` +
    `${results.split.validation.length} validation, ${results.split.test.length} test classes).`,
    `conv4 width ${results.settings.width} (${results.sizes.network.toLocaleString("en-US")} ` +
    `weights per network); generator ${results.sizes.generator.toLocaleString("en-US")} ` +
    `parameters; ${results.settings.steps} training steps; ${o.queries} queries per class.`,
    "",
    "## Ours",
    "",
    `Mean query accuracy over the same ${o.episodes} test episodes for every method, ± 1.96 x ` +
    "std / sqrt(episodes) (the papers' interval); `lr, steps` of the per-episode learning chosen " +
    "on validation classes (for `pretrained`, its logistic regression's, with the L2 strength; " +
    "`protonet` learns nothing per episode).",
    "",
    "| method | ways | shots | accuracy (%) | episodes | lr, steps | trained per episode | seconds |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...results.rows.map(row),
    "",
    "## Paired differences and targets",
    "",
    ...seedSummaryMarkdown(seedSummary([results]), { heading: "###", accuracy: false }),
    "## Published",
    "",
    published.length > 0
      ? "Numbers as printed in the papers, on their full protocols: they are context, not a " +
        "like-for-like comparison where our data or backbone differ (our Omniglot may be a subset " +
        "without rotations; see the class split above)."
      : "No published numbers for this dataset, ways and shots.",
    "",
    ...(published.length > 0
      ? [
        "| method | ways | shots | accuracy (%) | source |",
        "| --- | ---: | ---: | ---: | --- |",
        ...published.map((p) =>
          `| ${p.method} | ${p.ways} | ${p.shots} | ${p.accuracy}${
            p.ci95 !== undefined ? ` ± ${p.ci95}` : ""
          } | ${p.source} |`
        ),
      ]
      : []),
    "",
  ].join("\n");
}

/**
 * The section of a combined report on few-shot runs (`report DIR... --out FILE`): runs that differ
 * only by seed form a group, each with its statistics over the seeds (see the module doc).
 */
export function seedsSection(runs: readonly { name: string; results: FewShotResults }[]): string[] {
  const md = [
    "## Few-shot over random seeds",
    "",
    "Runs of `deno task experiment fewshot` that differ only by seed form a group; each run's " +
    "`results.json` keeps every test episode's accuracy, so every interval below can be recomputed.",
    "",
  ];
  for (const g of groupRunsBySeed(runs)) {
    md.push(
      `### ${g.label}`,
      "",
      `Runs: ${g.runs.map((r) => `${r.name} (seed ${r.results.options.seed})`).join(", ")}.`,
      "",
      ...seedSummaryMarkdown(seedSummary(g.runs.map((r) => r.results)), { heading: "####" }),
    );
  }
  return md;
}

/** Writes report.md beside results.json in `dir`; returns its path. */
export async function writeFewShotReport(dir: string): Promise<string> {
  const results = JSON.parse(await Deno.readTextFile(join(dir, "results.json"))) as FewShotResults;
  const path = join(dir, "report.md");
  await writeAtomic(path, fewShotMarkdown(results));
  return path;
}
