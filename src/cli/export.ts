/**
 * `deno task export`: writes a task's generated network (safetensors or ONNX) with a JSON file
 * of its preprocessing.
 *
 * @module
 */
import { join } from "node:path";
import { ADAPT_DEFAULTS } from "../adapt/mod.ts";
import { loadCheckpoint } from "../checkpoint.ts";
import { exportFromRun } from "../evaluate.ts";
import { EXPORT_FORMATS, type ExportFormat } from "../export/mod.ts";
import type { Gpu } from "../gpu/device.ts";
import { type Command, DATA_FLAGS, outputFolder } from "./command.ts";

/** `export`: writes a task's generated network and its preprocessing. */
export const EXPORT_COMMAND: Command = {
  summary: "write a task's generated network (safetensors or ONNX) + JSON with its preprocessing",
  flags: [
    { flag: "run", key: "run", kind: "string", help: "run folder" },
    { flag: "task", key: "task", kind: "string", help: "task index or name" },
    { flag: "z", key: "z", kind: "string", help: "a z file written by adapt" },
    { flag: "out", key: "out", kind: "string", help: "output folder (default <run>/export)" },
    {
      flag: "format",
      key: "format",
      kind: "string",
      values: EXPORT_FORMATS,
      help: "weights for PyTorch, or an ONNX model (default safetensors)",
    },
    ...DATA_FLAGS,
  ],
  run: runExport,
};

async function runExport(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
): Promise<void> {
  const run = (given.run as string | undefined) ?? ADAPT_DEFAULTS.run;
  const out = (given.out as string | undefined) ?? join(run, "export");
  await loadCheckpoint(run, []);
  await outputFolder("out", out);
  const gpu = await getGpuFn();
  const written = await exportFromRun(gpu, {
    run,
    task: given.task as string | undefined,
    z: given.z as string | undefined,
    out,
    format: given.format as ExportFormat | undefined,
    dataDir: given.dataDir as string | undefined,
    verify: given.verify as boolean | undefined,
  });
  console.log(`Wrote ${written.weights ?? written.onnx} and ${written.architecture}`);
}
