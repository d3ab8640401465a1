import { deepEqual, equal, throws } from "node:assert/strict";
import { createTensor, readU32 } from "../src/gpu/tensor.ts";
import { gatherRows, scatterRowsAdd } from "../src/ops/gather.ts";
import * as ref from "./reference/gather.ts";
import { assertClose, finiteDifference, getGpu, rng, runAndRead, uniform, upload } from "./util.ts";

/** `t` random indices below `n`. */
function randomIndices(t: number, n: number, seed: number): Uint32Array {
  const r = rng(seed);
  return Uint32Array.from({ length: t }, () => Math.floor(r() * n));
}

const CASES: { rows: number; width: number; indices: Uint32Array }[] = [
  { rows: 10, width: 7, indices: new Uint32Array([3, 3, 0, 9, 3]) },
  { rows: 4, width: 1, indices: new Uint32Array([2]) },
  { rows: 1, width: 5, indices: new Uint32Array([0, 0, 0]) },
  { rows: 6, width: 3, indices: new Uint32Array([5]) },
  { rows: 1000, width: 65, indices: randomIndices(300, 1000, 1) },
  { rows: 50, width: 300, indices: randomIndices(64, 50, 2) },
];

Deno.test("gatherRows copies the indexed rows, repeated indices and T = 1 included", async () => {
  const gpu = await getGpu();
  for (const { rows, width, indices } of CASES) {
    const tableData = uniform(rows * width, rows + width);
    const table = upload(gpu, [rows, width], tableData);
    const idx = upload(gpu, [indices.length], indices);
    const out = createTensor(gpu, [indices.length, width]);
    const got = await runAndRead(gpu, gatherRows(gpu, table, idx, out), out);
    deepEqual(got, new Float32Array(ref.gatherRows(tableData, indices, width)));
    for (const t of [table, idx, out]) t.destroy();
  }
});

Deno.test("gatherRows fills the row of an out-of-range index with NaN", async () => {
  const gpu = await getGpu();
  const table = upload(gpu, [3, 2], new Float32Array([1, 2, 3, 4, 5, 6]));
  const idx = upload(gpu, [3], new Uint32Array([2, 3, 0]));
  const out = createTensor(gpu, [3, 2]);
  const got = await runAndRead(gpu, gatherRows(gpu, table, idx, out), out);
  deepEqual(Array.from(got), [5, 6, NaN, NaN, 1, 2]);
  for (const t of [table, idx, out]) t.destroy();
});

Deno.test("scatterRowsAdd sums repeated indices, overwriting or accumulating", async () => {
  const gpu = await getGpu();
  for (const { rows, width, indices } of CASES) {
    const dOutData = uniform(indices.length * width, rows * 3 + width);
    const initial = uniform(rows * width, rows + 7);
    // Rows that no index names keep even the sign of a zero when accumulating.
    const named = new Set(indices);
    for (let n = 0; n < rows; n++) if (!named.has(n)) initial[n * width] = -0;
    const dOut = upload(gpu, [indices.length, width], dOutData);
    const idx = upload(gpu, [indices.length], indices);
    for (const accumulate of [false, true]) {
      const dTable = upload(gpu, [rows, width], initial);
      const dispatches = scatterRowsAdd(gpu, dOut, idx, dTable, { accumulate });
      const got = await runAndRead(gpu, dispatches, dTable);
      const expected = ref.scatterRowsAdd(dOutData, indices, {
        rows,
        width,
        initial: accumulate ? initial : undefined,
      });
      const label = `scatter [${rows}, ${width}] T=${indices.length} accumulate=${accumulate}`;
      assertClose(got, expected, { rtol: 1e-6, atol: 1e-6, label });
      // Rows that no index names: exactly 0, or exactly what they held.
      for (let n = 0; n < rows; n++) {
        if (named.has(n)) continue;
        const row = got.subarray(n * width, (n + 1) * width);
        const want = accumulate
          ? initial.subarray(n * width, (n + 1) * width)
          : new Float32Array(width);
        deepEqual(
          new Uint32Array(row.slice().buffer),
          new Uint32Array(want.slice().buffer),
          `${label} row ${n}`,
        );
      }
      // Deterministic: the same bits again (from the same starting values).
      if (!accumulate) {
        const again = await runAndRead(gpu, dispatches, dTable);
        deepEqual(new Uint32Array(again.buffer), new Uint32Array(got.buffer), `${label} repeats`);
      }
      dTable.destroy();
    }
    dOut.destroy();
    idx.destroy();
  }
});

Deno.test("scatterRowsAdd is the gradient of gatherRows (finite differences)", async () => {
  const gpu = await getGpu();
  const rows = 5;
  const width = 3;
  const indices = new Uint32Array([4, 1, 4, 0]);
  const tableData = uniform(rows * width, 8);
  const w = uniform(indices.length * width, 9);
  const fd = finiteDifference((table) => {
    const out = ref.gatherRows(table, indices, width);
    return out.reduce((s, v, i) => s + w[i]! * v, 0);
  }, tableData);
  const expected = ref.scatterRowsAdd(w, indices, { rows, width });
  assertClose(expected, fd, { rtol: 1e-6, atol: 1e-6, label: "reference vs fd" });
  const dOut = upload(gpu, [indices.length, width], w);
  const idx = upload(gpu, [indices.length], indices);
  const dTable = createTensor(gpu, [rows, width]);
  const got = await runAndRead(gpu, scatterRowsAdd(gpu, dOut, idx, dTable), dTable);
  assertClose(got, expected, { rtol: 1e-6, atol: 1e-6, label: "gpu vs reference" });
  // The indices are read, never written.
  deepEqual(await readU32(gpu, idx), indices);
  for (const t of [dOut, idx, dTable]) t.destroy();
});

Deno.test("gather and scatter reject mismatched shapes and types", async () => {
  const gpu = await getGpu();
  const table = createTensor(gpu, [4, 3]);
  const idx = createTensor(gpu, [2], "u32");
  const out = createTensor(gpu, [2, 3]);
  const rejects = (f: () => unknown, message: RegExp) => throws(f, { name: "RangeError", message });
  rejects(() => gatherRows(gpu, table, createTensor(gpu, [2]), out), /u32 indices/);
  rejects(() => gatherRows(gpu, table, idx, createTensor(gpu, [3, 3])), /\[2, 3\].*got \[3, 3\]/);
  rejects(() => gatherRows(gpu, table.reshape([12]), idx, out), /table of shape \[N, D\]/);
  rejects(() => gatherRows(gpu, table, idx, table.reshape([4, 3])), /\[2, 3\]/);
  rejects(() => scatterRowsAdd(gpu, out, idx, out.reshape([2, 3])), /buffer of dOut/);
  equal(gatherRows(gpu, table, createTensor(gpu, [0], "u32"), createTensor(gpu, [0, 3])).length, 0);
  for (const t of [table, idx, out]) t.destroy();
});
