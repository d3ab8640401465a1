import { createTensor } from "../src/gpu/tensor.ts";
import { pipeline, prepare, Uniform } from "../src/gpu/kernel.ts";
import assert from "node:assert/strict";
import { fill } from "../src/ops/fill.ts";
import { fill as fillRef } from "./reference/fill.ts";
import { assertClose, getGpu, runAndRead } from "./util.ts";

Deno.test("fill sets every element, including sizes beyond one grid row", async () => {
  const gpu = await getGpu();
  for (const n of [1, 255, 257, 65535 * 256 + 3]) {
    const t = createTensor(gpu, [n]);
    const out = await runAndRead(gpu, fill(gpu, t, 1.5), t);
    assertClose(out, fillRef(n, 1.5), { label: `fill n=${n}` });
    t.destroy();
  }
});

Deno.test("a binding above the adapter's largest storage binding is refused with its size", async () => {
  const gpu = await getGpu();
  const most = gpu.limits.maxStorageBufferBindingSize;
  const t = createTensor(gpu, [4]);
  const fillPipe = pipeline(gpu, "fill");
  const uniform = new Uniform(gpu, [["u32", 4], ["f32", 1]]);
  // A binding that claims more than the limit is refused before WebGPU sees the bind group
  // (whose own refusal would come later as an uncaught error naming neither kernel nor size).
  const mib = (most / 2 ** 20).toFixed(1);
  assert.throws(
    () => prepare(gpu, fillPipe, [{ buffer: t.buffer, size: most + 16 }], [1, 1, 1], uniform),
    (e) =>
      e instanceof RangeError &&
      e.message.startsWith(
        `fill:main needs ${((most + 16) / 2 ** 20).toFixed(1)} MiB in one buffer (binding 0), ` +
          `above this adapter's largest storage binding of ${mib} MiB`,
      ),
  );
  // A binding within the limit still runs.
  const out = await runAndRead(gpu, fill(gpu, t, 2.5), t);
  assertClose(out, fillRef(4, 2.5), { label: "fill after a refusal" });
  uniform.destroy();
  t.destroy();
});
