import { createTensor } from "../src/gpu/tensor.ts";
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
