/**
 * What a resumed few-shot experiment keeps from an earlier run in its folder: each training's
 * weights (`trained_<name>.safetensors`, written when the training ends) and each finished row
 * (`rows.json`, rewritten after every row). Both carry a fingerprint of the options that decided
 * them; anything of another fingerprint is trained or scored again, never mixed in. Training is
 * most of a run's time (2,888 of 3,334 s in the committed quick run), so a run stopped part-way,
 * or extended to more shots or episodes, costs only what is new.
 *
 * @module
 */
import { join } from "node:path";
import { loadSafetensors, saveSafetensors, writeAtomic } from "../safetensors.ts";
import type { TrainedEmbedding } from "./embedding.ts";

/** A training kept from an earlier run: where, and the code and wall time that made it. */
export interface KeptTraining {
  /** The training's name, e.g. "meta". */
  name: string;
  /** `git describe` of the code that trained it. */
  commit: string;
  /** Its wall time then, seconds. */
  seconds: number;
}

/** The file of a training's weights in the run folder. */
export function trainedFile(out: string, name: string): string {
  return join(out, `trained_${name}.safetensors`);
}

/**
 * The weights of training `name` an earlier run left in `out` under this `fingerprint`, with the
 * commit and wall time that made them; undefined when there are none (or of other options).
 */
export async function keptTraining(
  out: string,
  name: string,
  fingerprint: string,
): Promise<(TrainedEmbedding & { kept: KeptTraining }) | undefined> {
  const found = await loadSafetensors(trainedFile(out, name)).catch(() => undefined);
  if (!found || found.metadata.fingerprint !== fingerprint) return undefined;
  const weights = new Map<string, Float32Array>();
  for (const [k, t] of found.tensors) weights.set(k, t.data as Float32Array);
  return {
    weights,
    loss: JSON.parse(found.metadata.loss!),
    kept: {
      name,
      commit: found.metadata.commit ?? "unknown",
      seconds: Number(found.metadata.seconds),
    },
  };
}

/** Writes a training's weights into `out`, for a later run with `resume` to keep. */
export async function saveTraining(
  out: string,
  name: string,
  trained: TrainedEmbedding,
  record: { fingerprint: string; commit: string; seconds: number },
): Promise<void> {
  await saveSafetensors(
    trainedFile(out, name),
    new Map([...trained.weights].map(([k, data]) => [k, { shape: [data.length], data }])),
    {
      fingerprint: record.fingerprint,
      loss: JSON.stringify(trained.loss),
      commit: record.commit,
      seconds: String(record.seconds),
    },
  );
}

/** The finished rows of a run folder, by the fingerprint they were scored under. */
interface RowsFile<Row> {
  fingerprint: string;
  rows: Row[];
}

/** The rows file of a run folder. */
export function rowsFile(out: string): string {
  return join(out, "rows.json");
}

/** Rows an earlier run of this `fingerprint` finished in `out` (none for another or no file). */
export async function keptRows<Row>(out: string, fingerprint: string): Promise<Row[]> {
  try {
    const saved = JSON.parse(await Deno.readTextFile(rowsFile(out))) as RowsFile<Row>;
    return saved.fingerprint === fingerprint ? saved.rows : [];
  } catch {
    // No file, or one cut short: nothing is kept, every row is scored again.
    return [];
  }
}

/** Records the rows finished so far, so that a stopped run keeps them. */
export async function saveRows<Row>(out: string, fingerprint: string, rows: Row[]): Promise<void> {
  const saved: RowsFile<Row> = { fingerprint, rows };
  await writeAtomic(rowsFile(out), JSON.stringify(saved) + "\n");
}
