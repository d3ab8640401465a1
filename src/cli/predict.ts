/**
 * `deno task predict`: classifies pictures with a learned z (or a task of the run), printing the
 * probability and class of each.
 *
 * @module
 */
import { DataError } from "../data/split.ts";
import type { Gpu } from "../gpu/device.ts";
import { predict, PREDICT_DEFAULTS, type PredictOptions } from "../predict.ts";
import { type Command, DATA_FLAGS, PICTURE_FLAGS, printAdapter, warnSkipped } from "./command.ts";
import { UsageError } from "./flags.ts";

/** `predict`: the probability and class of each picture given. */
export const PREDICT_COMMAND: Command = {
  summary: "classify pictures with a learned z: probability and class of each",
  flags: [
    { flag: "run", key: "run", kind: "string", help: "run folder" },
    { flag: "z", key: "z", kind: "string", help: "a z file written by adapt" },
    { flag: "task", key: "task", kind: "string", help: "or a task of the run (index or name)" },
    { flag: "json", key: "json", kind: "bool", help: "one JSON object per line" },
    { flag: "batch", key: "batch", kind: "int", help: "images per GPU batch" },
    ...PICTURE_FLAGS,
    ...DATA_FLAGS,
  ],
  defaults: PREDICT_DEFAULTS,
  positional: "FILES_OR_DIRS...",
  many: true,
  run: runPredict,
};

async function runPredict(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
  paths: string[],
): Promise<void> {
  const { json, ...rest } = given;
  const options = { ...PREDICT_DEFAULTS, ...rest, paths } as PredictOptions;
  if (options.batch < 1) throw new UsageError("--batch must be at least 1");
  if (options.z !== undefined && options.task !== undefined) {
    throw new UsageError("--z and --task are exclusive: pass one");
  }
  const gpu = await getGpuFn();
  printAdapter(gpu, quiet);
  const result = await predict(gpu, options, { onSkip: warnSkipped });
  const [, positive] = result.classNames;
  if (json) {
    for (const p of result.predictions) {
      console.log(JSON.stringify({
        file: p.file,
        probability: p.probability,
        class: p.className,
        label: p.label,
        logit: p.logit,
      }));
    }
  } else {
    const width = Math.max(4, ...result.predictions.map((p) => p.file.length));
    console.log(`${"file".padEnd(width)}  P(${positive})  class`);
    for (const p of result.predictions) {
      console.log(
        `${p.file.padEnd(width)}  ${
          p.probability.toFixed(4).padEnd(positive.length + 3)
        }  ${p.className}`,
      );
    }
  }
  console.error(
    `${result.predictions.length} picture(s) classified, ${result.skipped.length} skipped; ` +
      `task '${result.task}' (P is the probability of '${positive}')`,
  );
  if (result.predictions.length === 0) {
    throw new DataError("no usable picture among the files given; expected PNG or JPEG files");
  }
}
