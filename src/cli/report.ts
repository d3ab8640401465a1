/**
 * `deno task report`: writes report.md with SVG plots from experiment or sweep folders, or one
 * Markdown file combining several.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { combineReports, writeReport } from "../report.ts";
import { isSweepDir } from "../sweep/plan.ts";
import { writeSweepReport } from "../sweep/report.ts";
import type { Command } from "./command.ts";
import { UsageError } from "./flags.ts";

/** `report`: one report per folder, or with `--out` one for them all. */
export const REPORT_COMMAND: Command = {
  summary: "write report.md with SVG plots from experiment or sweep folders (--out combines them)",
  flags: [{ flag: "out", key: "out", kind: "string", help: "one Markdown file for all DIRs" }],
  positional: "DIR...",
  many: true,
  run: runReport,
};

async function runReport(
  _gpu: () => Promise<Gpu>,
  given: Record<string, unknown>,
  _quiet: boolean,
  dirs: string[],
): Promise<void> {
  const sweeps = await Promise.all(dirs.map(isSweepDir));
  if (sweeps.some(Boolean)) {
    if (typeof given.out === "string" && dirs.length > 1) {
      throw new UsageError("--out with a sweep folder takes that one folder only");
    }
    for (const [i, dir] of dirs.entries()) {
      if (!sweeps[i]) {
        console.log(`Wrote ${await writeReport(dir)}`);
        continue;
      }
      const report = await writeSweepReport(dir, { out: given.out as string | undefined });
      console.log(`Sweep ${dir}: held-out test accuracy over seeds (95% CI: Student t)`);
      for (const line of report.table) console.log(`  ${line}`);
      if (report.notDone.length > 0) {
        console.log(`Not done, not counted: ${report.notDone.map((n) => n.cell.name).join(", ")}`);
      }
      console.log(`Wrote ${report.path}`);
    }
    return;
  }
  if (typeof given.out === "string") {
    console.log(`Wrote ${await combineReports(dirs, given.out)}`);
    return;
  }
  for (const dir of dirs) console.log(`Wrote ${await writeReport(dir)}`);
}
