/**
 * Row gather and scatter-add (shaders/gather.wgsl): pick the task vectors of a step's tasks from
 * the table of all of them, and send their gradients back.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Invocations per workgroup. */
const GROUP = 256;

/**
 * Prepares out[t, :] = table[indices[t], :] for table [N, D], u32 indices [T] and out [T, D]. An
 * index >= N (which the caller should never send) fills its row of out with NaN.
 */
export function gatherRows(gpu: Gpu, table: Tensor, indices: Tensor, out: Tensor): Dispatch[] {
  const { tasks, width, rows } = check("gatherRows", { table, indices, out });
  if (out.buffer === table.buffer || out.buffer === indices.buffer) {
    throw new RangeError("gatherRows cannot write out into the buffer of table or indices");
  }
  if (tasks * width === 0) return [];
  const uniform = new Uniform(gpu, [["u32", tasks], ["u32", width], ["u32", rows]]);
  const pipe = pipeline(gpu, "gather", { entry: "gather_rows" });
  return [
    prepare(gpu, pipe, [table, indices, out], grid(Math.ceil(tasks * width / GROUP)), uniform),
  ];
}

/**
 * Prepares dTable[n, :] (+)= sum over t with indices[t] == n of dOut[t, :] for dOut [T, D], u32
 * indices [T] and dTable [N, D]. Each element of dTable is owned by one invocation that loops over
 * t in order, so repeated indices are summed deterministically. Rows no index names are set to 0,
 * or left as they are with `accumulate`; indices >= N are ignored.
 */
export function scatterRowsAdd(
  gpu: Gpu,
  dOut: Tensor,
  indices: Tensor,
  dTable: Tensor,
  options: { accumulate?: boolean } = {},
): Dispatch[] {
  const { tasks, width, rows } = check("scatterRowsAdd", { table: dTable, indices, out: dOut });
  if (dTable.buffer === dOut.buffer || dTable.buffer === indices.buffer) {
    throw new RangeError("scatterRowsAdd cannot write dTable into the buffer of dOut or indices");
  }
  if (rows * width === 0) return [];
  const uniform = new Uniform(gpu, [["u32", tasks], ["u32", width], ["u32", rows]]);
  const pipe = pipeline(gpu, "gather", {
    entry: "scatter_rows_add",
    constants: { ACCUMULATE: options.accumulate ? 1 : 0 },
  });
  const groups = grid(Math.ceil(rows * width / GROUP));
  return [prepare(gpu, pipe, [dOut, indices, dTable], groups, uniform)];
}

/** Validates table [N, D], indices u32 [T] and out [T, D]; returns T, D and N. */
function check(
  op: string,
  { table, indices, out }: { table: Tensor; indices: Tensor; out: Tensor },
): { tasks: number; width: number; rows: number } {
  if (indices.dtype !== "u32" || indices.shape.length !== 1) {
    throw new RangeError(
      `${op} expects u32 indices of shape [T], got ${indices.dtype} ${dims(indices.shape)}`,
    );
  }
  if (table.dtype !== "f32" || out.dtype !== "f32") {
    throw new RangeError(`${op} expects f32 rows, got ${table.dtype} and ${out.dtype}`);
  }
  const tasks = indices.shape[0]!;
  if (table.shape.length !== 2) {
    throw new RangeError(`${op} expects a table of shape [N, D], got ${dims(table.shape)}`);
  }
  const [rows, width] = table.shape as [number, number];
  if (out.shape.length !== 2 || out.shape[0] !== tasks || out.shape[1] !== width) {
    throw new RangeError(
      `${op} expects rows of shape [${tasks}, ${width}] for ${tasks} indices into a table ` +
        `${dims(table.shape)}, got ${dims(out.shape)}`,
    );
  }
  return { tasks, width, rows };
}

/** A shape as it reads in messages: [2, 3, 4]. */
function dims(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
