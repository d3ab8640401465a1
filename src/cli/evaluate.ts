/**
 * `deno task evaluate`: the test accuracy of a run's tasks, and of its held-out tasks with the
 * mean z.
 *
 * @module
 */
import { ADAPT_DEFAULTS } from "../adapt/mod.ts";
import { evaluateRun } from "../evaluate.ts";
import type { Gpu } from "../gpu/device.ts";
import { type Command, DATA_FLAGS, printAdapter } from "./command.ts";

/** `evaluate`: scores a run's tasks and its held-out task with the mean z. */
export const EVALUATE_COMMAND: Command = {
  summary: "test accuracy of a run's tasks and its held-out task with the mean z",
  flags: [
    { flag: "run", key: "run", kind: "string", help: "run folder" },
    ...DATA_FLAGS,
  ],
  run: runEvaluate,
};

async function runEvaluate(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
): Promise<void> {
  const gpu = await getGpuFn();
  printAdapter(gpu, quiet);
  const run = (given.run as string | undefined) ?? ADAPT_DEFAULTS.run;
  const report = await evaluateRun(gpu, {
    run,
    dataDir: given.dataDir as string | undefined,
    verify: given.verify as boolean | undefined,
  });
  for (const s of report.tasks) {
    console.log(
      `${String(s.task).padStart(4)}  ${s.name.padEnd(28)} ${
        s.heldOut ? "held-out (mean z)" : "trained"
      }`.padEnd(60) +
        `  acc ${(100 * s.accuracy).toFixed(2)}%  loss ${s.loss.toFixed(4)}  (${s.count} images)`,
    );
  }
  console.log(
    `Mean test accuracy: trained tasks ${
      (100 * report.trainedAccuracy).toFixed(2)
    }%, held-out with mean z ${(100 * report.heldOutAccuracy).toFixed(2)}%`,
  );
}
