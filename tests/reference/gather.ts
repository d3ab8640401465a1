/**
 * CPU reference of shaders/gather.wgsl.
 *
 * @module
 */

/** out[t, :] = table[indices[t], :] for a table of `width`-long rows (NaN rows for bad indices). */
export function gatherRows(
  table: ArrayLike<number>,
  indices: ArrayLike<number>,
  width: number,
): Float64Array {
  const rows = table.length / width;
  const out = new Float64Array(indices.length * width);
  for (let t = 0; t < indices.length; t++) {
    const row = indices[t]!;
    for (let d = 0; d < width; d++) {
      out[t * width + d] = row < rows ? table[row * width + d]! : NaN;
    }
  }
  return out;
}

/**
 * dTable[n, :] = (initial[n, :] or 0) + sum over t with indices[t] == n of dOut[t, :], for
 * `rows` rows of `width`; indices >= rows are ignored.
 */
export function scatterRowsAdd(
  dOut: ArrayLike<number>,
  indices: ArrayLike<number>,
  options: { rows: number; width: number; initial?: ArrayLike<number> },
): Float64Array {
  const { rows, width, initial } = options;
  const dTable = initial ? Float64Array.from(initial) : new Float64Array(rows * width);
  for (let t = 0; t < indices.length; t++) {
    const row = indices[t]!;
    if (row >= rows) continue;
    for (let d = 0; d < width; d++) dTable[row * width + d]! += dOut[t * width + d]!;
  }
  return dTable;
}
