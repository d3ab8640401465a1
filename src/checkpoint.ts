/**
 * Checkpoints of a run folder: `checkpoint.json` (resolved options, dataset identity, tasks, step,
 * versions), `model.safetensors` (generator parameters and task vectors) and `optimizer.safetensors`
 * (optimiser state), each written atomically; `checkpoint.json` is written last and names the step
 * the tensor files must carry, so a run stopped between two writes is detected on load.
 *
 * @module
 */
import { join } from "node:path";
import type { Gpu } from "./gpu/device.ts";
import { type Arena, read, write } from "./gpu/tensor.ts";
import {
  loadSafetensors,
  type NamedTensor,
  SafetensorsError,
  saveSafetensors,
  writeAtomic,
} from "./safetensors.ts";

/** Version of the checkpoint layout; bumped when it changes incompatibly. */
export const CHECKPOINT_FORMAT = 1;

/** What `checkpoint.json` holds besides the tensors. */
export interface CheckpointInfo<Options> {
  /** Layout version. */
  format: number;
  /** Steps completed. */
  step: number;
  /** The resolved options of the run. */
  options: Options;
  /** Wall time in seconds up to this checkpoint, summed over resumes (absent in older runs). */
  seconds?: number;
  /** Anything else the writer needs back (dataset identity, task list, config). */
  state: Record<string, unknown>;
  /** Deno and SuperNet versions, for the record. */
  versions: Record<string, string>;
}

/** A checkpoint that cannot be used: names the file and what is wrong. */
export class CheckpointError extends Error {
  /** One line naming the file and the problem. */
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

/** Downloads every tensor of arenas as named CPU tensors, prefixed by the arena's key. */
export async function arenaTensors(
  gpu: Gpu,
  arenas: Record<string, Arena>,
): Promise<Map<string, NamedTensor>> {
  const out = new Map<string, NamedTensor>();
  for (const [prefix, arena] of Object.entries(arenas)) {
    for (const { name, tensor } of arena.entries) {
      out.set(`${prefix}.${name}`, { shape: [...tensor.shape], data: await read(gpu, tensor) });
    }
  }
  return out;
}

/**
 * Uploads named tensors into arenas; every arena tensor must be present with the same shape, and
 * a mismatch lists each tensor that differs.
 */
export function restoreArenas(
  gpu: Gpu,
  tensors: ReadonlyMap<string, NamedTensor>,
  arenas: Record<string, Arena>,
  path: string,
): void {
  const problems: string[] = [];
  for (const [prefix, arena] of Object.entries(arenas)) {
    for (const { name, tensor } of arena.entries) {
      const key = `${prefix}.${name}`;
      const found = tensors.get(key);
      if (!found) problems.push(`${key} missing`);
      else if (found.shape.join(",") !== tensor.shape.join(",")) {
        problems.push(`${key} is [${found.shape}], expected [${tensor.shape}]`);
      }
    }
  }
  if (problems.length > 0) {
    throw new CheckpointError(
      `${path} does not match this architecture: ${problems.slice(0, 8).join("; ")}` +
        (problems.length > 8 ? `; and ${problems.length - 8} more` : ""),
    );
  }
  for (const [prefix, arena] of Object.entries(arenas)) {
    for (const { name, tensor } of arena.entries) {
      write(gpu, tensor, tensors.get(`${prefix}.${name}`)!.data as Float32Array);
    }
  }
}

/** Writes a checkpoint into `dir`: tensor files first, then `checkpoint.json`. */
export async function saveCheckpoint<Options>(
  dir: string,
  info: CheckpointInfo<Options>,
  files: Record<string, ReadonlyMap<string, NamedTensor>>,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const [file, tensors] of Object.entries(files)) {
    await saveSafetensors(join(dir, file), tensors, { step: String(info.step) });
  }
  await writeAtomic(join(dir, "checkpoint.json"), JSON.stringify(info, null, 2) + "\n");
}

/** Reads `checkpoint.json` and the named tensor files, checking that they belong together. */
export async function loadCheckpoint<Options>(
  dir: string,
  files: string[],
): Promise<{ info: CheckpointInfo<Options>; tensors: Record<string, Map<string, NamedTensor>> }> {
  const path = join(dir, "checkpoint.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(
        `${path} not found: expected a run folder written by 'deno task train' (pass it with --run)`,
      );
    }
    throw e;
  }
  let info: CheckpointInfo<Options>;
  try {
    info = JSON.parse(text);
  } catch {
    throw new CheckpointError(`${path} is not valid JSON; the checkpoint is corrupt`);
  }
  if (info.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(
      `${path} has checkpoint format ${info.format}, expected ${CHECKPOINT_FORMAT}`,
    );
  }
  const tensors: Record<string, Map<string, NamedTensor>> = {};
  for (const file of files) {
    const full = join(dir, file);
    try {
      const loaded = await loadSafetensors(full);
      if (loaded.metadata.step !== String(info.step)) {
        throw new CheckpointError(
          `${full} is from step ${loaded.metadata.step} but checkpoint.json says step ${info.step}; the run stopped while saving`,
        );
      }
      tensors[file] = loaded.tensors;
    } catch (e) {
      if (e instanceof SafetensorsError) throw new CheckpointError(e.message);
      throw e;
    }
  }
  return { info, tensors };
}
