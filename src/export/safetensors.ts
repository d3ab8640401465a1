/**
 * Safetensors export of a task network: the weights in PyTorch layout and names, loadable with
 * `safetensors.torch.load_file` straight into the module the JSON description spells out.
 *
 * @module
 */
import { type NamedTensor, saveSafetensors } from "../safetensors.ts";
import type { ExportedArchitecture } from "./network.ts";

/** Writes `weights` (atomically) to `path`, with metadata pointing at the JSON description. */
export async function writeSafetensorsExport(
  path: string,
  weights: ReadonlyMap<string, NamedTensor>,
  description: Pick<ExportedArchitecture, "format" | "target" | "name">,
): Promise<void> {
  await saveSafetensors(path, weights, {
    format: description.format,
    target: description.target,
    architecture: `${description.name}.json`,
  });
}
