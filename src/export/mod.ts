/**
 * Export of one task's generated network: the generator's output for a task vector z as
 * safetensors (PyTorch layout) or ONNX (preprocessing included), always with the JSON description
 * beside it that records layers, preprocessing, labels and source.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import type { Preprocessing } from "../images.ts";
import type { SuperNet } from "../model/supernet.ts";
import { type NamedTensor, writeAtomic } from "../safetensors.ts";
import {
  describeArchitecture,
  type ExportedArchitecture,
  type ExportFormat,
  type ExportSource,
  generateWeights,
} from "./network.ts";
import { onnxModel } from "./onnx.ts";
import { writeSafetensorsExport } from "./safetensors.ts";

export {
  describeArchitecture,
  EXPORT_FORMAT_VERSION,
  EXPORT_FORMATS,
  type ExportedArchitecture,
  type ExportedLayer,
  type ExportFormat,
  type ExportSource,
  generateWeights,
} from "./network.ts";
export { onnxModel } from "./onnx.ts";

/** What {@link exportTaskNetwork} writes and records. */
export interface ExportTaskOptions {
  /** File name stem: letters, digits, '_', '-' and '.'. */
  name: string;
  /** safetensors (default) or onnx; the JSON description is always written. */
  format?: ExportFormat;
  /** The input preprocessing (needed for ONNX, recorded in the JSON). */
  preprocessing?: Preprocessing;
  /** Names of label 0 and label 1. */
  classNames?: [string, string];
  /** The generator and z the weights came from. */
  source?: ExportSource;
}

/**
 * Writes the network that `net` generates for task vector z [zDim] into `dir` (created if
 * missing): the weights as `<name>.safetensors` or the model as `<name>.onnx`, and the description
 * as `<name>.json`, each written atomically. Returns the paths.
 */
export async function exportTaskNetwork(
  gpu: Gpu,
  net: SuperNet,
  z: Float32Array,
  dir: string,
  options: ExportTaskOptions,
): Promise<{ weights?: string; onnx?: string; architecture: string }> {
  const { name } = options;
  const format = options.format ?? "safetensors";
  if (!/^[\w.-]+$/.test(name)) {
    throw new RangeError(
      `Export name must use only letters, digits, '_', '-' and '.', got '${name}'`,
    );
  }
  const generated = await generateWeights(gpu, net, z);
  const weights = new Map<string, NamedTensor>(
    net.weights.map((w) => [w.name, { shape: [...w.shape], data: generated.get(w.name)! }]),
  );
  const file = `${name}.${format}`;
  const description = describeArchitecture(net.spec, {
    name,
    weights,
    ...(format === "onnx" ? { onnxFile: file } : { weightsFile: file }),
    z,
    preprocessing: options.preprocessing,
    classNames: options.classNames,
    source: options.source,
  });
  const path = `${dir}/${file}`;
  const architecture = `${dir}/${name}.json`;
  await Deno.mkdir(dir, { recursive: true });
  // The other format of the same network may be there already: keep naming it.
  const before = await readDescription(architecture);
  if (before && JSON.stringify(before.z) === JSON.stringify(description.z)) {
    if (format === "onnx" && before.weightsFile) description.weightsFile = before.weightsFile;
    if (format !== "onnx" && before.onnxFile) description.onnxFile = before.onnxFile;
  }
  if (format === "onnx") {
    await writeAtomic(path, onnxModel(description, generated));
  } else {
    await writeSafetensorsExport(path, weights, description);
  }
  await writeAtomic(architecture, JSON.stringify(description, null, 2) + "\n");
  return format === "onnx" ? { onnx: path, architecture } : { weights: path, architecture };
}

async function readDescription(path: string): Promise<ExportedArchitecture | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return undefined;
  }
}
