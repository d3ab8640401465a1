/**
 * report.md of `experiment fewshot`: our rows (mean accuracy over test episodes with the 95%
 * interval, as the papers report) beside published numbers, the paired differences between our
 * methods over the same episodes, and the verdicts of the targets.
 *
 * @module
 */
import { join } from "node:path";
import { writeAtomic } from "../safetensors.ts";
import { pairedInterval, verdict } from "../stats.ts";
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

/** The target rows: each a paired comparison of two of our methods over the same episodes. */
function comparisons(results: FewShotResults): string[] {
  const lines: string[] = [];
  const shots = [...new Set(results.rows.map((r) => r.shots))];
  for (const k of shots) {
    const at = results.rows.filter((r) => r.shots === k);
    const full = at.find((r) => r.method === "full");
    for (const z of at.filter((r) => r.method.startsWith("z"))) {
      if (!full) continue;
      const target = k === 1 ? 0.1 : 0;
      const diff = pairedInterval(z.values, full.values);
      const v = verdict(diff, { atLeast: target });
      lines.push(
        `| ${z.method} - full | ${k} | ${pct(diff.estimate)} [${pct(diff.lo)}, ${
          pct(diff.hi)
        }] | >= ${pct(target)} | ${v} |`,
      );
    }
  }
  return lines;
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
    "## Paired differences",
    "",
    `Per test episode (the unit), 95% t interval over ${o.episodes} episodes; target at 1 shot: ` +
    "z at least 10 points above the whole network trained from scratch.",
    "",
    "| difference | shots | points [95% interval] | target | verdict |",
    "| --- | ---: | ---: | ---: | --- |",
    ...comparisons(results),
    "",
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

/** Writes report.md beside results.json in `dir`; returns its path. */
export async function writeFewShotReport(dir: string): Promise<string> {
  const results = JSON.parse(await Deno.readTextFile(join(dir, "results.json"))) as FewShotResults;
  const path = join(dir, "report.md");
  await writeAtomic(path, fewShotMarkdown(results));
  return path;
}
