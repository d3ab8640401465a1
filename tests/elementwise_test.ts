import { equal as assertEquals, throws as assertThrows } from "node:assert/strict";
import { createTensor } from "../src/gpu/tensor.ts";
import type { Activation } from "../src/ops/activation.ts";
import { activation, activationBackward, axpby, biasAdd } from "../src/ops/elementwise.ts";
import * as ref from "./reference/elementwise.ts";
import { assertClose, finiteDifference, getGpu, runAndRead, uniform, upload } from "./util.ts";

const ACTIVATIONS: Activation[] = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"];
/** Sizes around the vec4 width and the 256-float workgroup. */
const SIZES = [1, 3, 4, 7, 256, 257, 1021, 4099];

/** Moves values away from 0 so relu's kink stays outside the finite-difference step. */
function awayFromZero(x: Float32Array): Float32Array {
  return x.map((v) => (Math.abs(v) < 0.05 ? v + (v < 0 ? -0.1 : 0.1) : v));
}

Deno.test("activation matches the reference for every activation and awkward sizes", async () => {
  const gpu = await getGpu();
  for (const kind of ACTIVATIONS) {
    for (const n of SIZES) {
      for (const options of [{ activation: kind }, { activation: kind, slope: 0.2, scale: 2.5 }]) {
        const xData = uniform(n, n * 7 + 1, -4, 4);
        const x = upload(gpu, [n], xData);
        const y = createTensor(gpu, [n]);
        const got = await runAndRead(gpu, activation(gpu, x, y, options), y);
        assertClose(got, ref.activation(xData, options), {
          rtol: 1e-5,
          atol: 1e-6,
          label: `${kind} n=${n} scale=${options.scale ?? 1}`,
        });
        x.destroy();
        y.destroy();
      }
    }
  }
});

Deno.test("tanh and sigmoid saturate to finite values at large magnitudes", async () => {
  const gpu = await getGpu();
  const xData = new Float32Array([-1e4, 1e4, -1e3, 1e3, -100, 100, -20, 20, 0, -3e38, 3e38]);
  const n = xData.length;
  const x = upload(gpu, [n], xData);
  const y = createTensor(gpu, [n]);
  const dy = upload(gpu, [n], new Float32Array(n).fill(1));
  const dx = createTensor(gpu, [n]);
  for (const kind of ["tanh", "sigmoid"] as const) {
    for (const scale of [1, 3]) {
      const options = { activation: kind, scale };
      const got = await runAndRead(gpu, activation(gpu, x, y, options), y);
      for (const v of got) assertEquals(Number.isFinite(v), true, `${kind} gave ${v}`);
      assertClose(got, ref.activation(xData, options), { rtol: 0, atol: 1e-6, label: kind });
      // Exact saturation: the reference values rounded to f32 are exactly +-scale, or 0 and scale.
      assertEquals(got[1], scale);
      assertEquals(got[0], kind === "tanh" ? -scale : 0);
      const grad = await runAndRead(gpu, activationBackward(gpu, y, dy, dx, options), dx);
      for (const v of grad) assertEquals(Number.isFinite(v), true, `${kind}' gave ${v}`);
      assertClose(grad, ref.activationBackward(got, new Float32Array(n).fill(1), options), {
        atol: 1e-6,
        label: `${kind} backward`,
      });
    }
  }
  for (const t of [x, y, dy, dx]) t.destroy();
});

Deno.test("activation on more than 65535 workgroups uses the 2D grid", async () => {
  const gpu = await getGpu();
  const n = 65535 * 256 + 7;
  const xData = uniform(n, 99, -3, 3);
  const x = upload(gpu, [n], xData);
  const y = createTensor(gpu, [n]);
  const dispatches = activation(gpu, x, y, { activation: "leaky_relu" });
  assertEquals(dispatches.length, 2, "a vec4 dispatch and a tail dispatch");
  assertEquals(dispatches[0]!.groups[1] > 1, true, "the vec4 dispatch spans several grid rows");
  const got = await runAndRead(gpu, dispatches, y);
  assertClose(got, ref.activation(xData, { activation: "leaky_relu" }), {
    rtol: 1e-6,
    atol: 0,
    label: "leaky_relu large",
  });
  x.destroy();
  y.destroy();
});

Deno.test("activation backward matches finite differences of the reference forward", async () => {
  const gpu = await getGpu();
  for (const kind of ACTIVATIONS) {
    for (const options of [{ activation: kind }, { activation: kind, slope: 0.3, scale: 2.5 }]) {
      for (const n of [1, 6, 9]) {
        const xData = awayFromZero(uniform(n, n + 3, -2, 2));
        const w = uniform(n, n + 5);
        const fd = finiteDifference((xs) => {
          const ys = ref.activation(xs, options);
          return ys.reduce((s, v, i) => s + w[i]! * v, 0);
        }, xData);
        const yData = new Float32Array(ref.activation(xData, options));
        const expected = ref.activationBackward(yData, w, options);
        const label = `${kind} n=${n} scale=${options.scale ?? 1}`;
        assertClose(expected, fd, { rtol: 1e-3, atol: 1e-4, label: `${label} reference vs fd` });

        const y = upload(gpu, [n], yData);
        const dy = upload(gpu, [n], w);
        const dx = createTensor(gpu, [n]);
        const got = await runAndRead(gpu, activationBackward(gpu, y, dy, dx, options), dx);
        assertClose(got, expected, { rtol: 1e-5, atol: 1e-6, label: `${label} gpu` });

        const before = uniform(n, n + 11);
        const acc = upload(gpu, [n], before);
        const summed = await runAndRead(
          gpu,
          activationBackward(gpu, y, dy, acc, { ...options, accumulate: true }),
          acc,
        );
        assertClose(summed, expected.map((v, i) => v + before[i]!), {
          rtol: 1e-5,
          atol: 1e-6,
          label: `${label} accumulate`,
        });
        for (const t of [y, dy, dx, acc]) t.destroy();
      }
    }
  }
});

Deno.test("activation backward on awkward sizes matches the reference", async () => {
  const gpu = await getGpu();
  for (const n of SIZES) {
    const options = { activation: "tanh" as const, scale: 1.5 };
    const yData = new Float32Array(ref.activation(uniform(n, n, -3, 3), options));
    const w = uniform(n, n + 1);
    const y = upload(gpu, [n], yData);
    const dy = upload(gpu, [n], w);
    const dx = createTensor(gpu, [n]);
    const got = await runAndRead(gpu, activationBackward(gpu, y, dy, dx, options), dx);
    assertClose(got, ref.activationBackward(yData, w, options), {
      rtol: 1e-5,
      atol: 1e-6,
      label: `tanh backward n=${n}`,
    });
    for (const t of [y, dy, dx]) t.destroy();
  }
});

Deno.test("axpby with and without b, overwriting and accumulating", async () => {
  const gpu = await getGpu();
  for (const n of SIZES) {
    const aData = uniform(n, n + 1);
    const bData = uniform(n, n + 2);
    const before = uniform(n, n + 3);
    const a = upload(gpu, [n], aData);
    const b = upload(gpu, [n], bData);
    for (const withB of [true, false]) {
      for (const accumulate of [false, true]) {
        const out = upload(gpu, [n], before);
        const options = { b: withB ? b : undefined, alpha: 0.75, beta: -2, accumulate };
        const got = await runAndRead(gpu, axpby(gpu, a, out, options), out);
        const expected = ref.axpby(aData, { ...options, b: withB ? bData : undefined })
          .map((v, i) => v + (accumulate ? before[i]! : 0));
        assertClose(got, expected, { label: `axpby n=${n} b=${withB} accumulate=${accumulate}` });
        out.destroy();
      }
    }
    a.destroy();
    b.destroy();
  }
});

Deno.test("biasAdd adds each task's bias to every row", async () => {
  const gpu = await getGpu();
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [2, 3, 5],
    [3, 7, 8],
    [1, 5, 12],
    [4, 130, 33],
    [3, 300, 64],
  ];
  for (const shape of shapes) {
    const [t, r, n] = shape;
    const xData = uniform(t * r * n, r + n);
    const biasData = uniform(t * n, t + n);
    const x = upload(gpu, shape, xData);
    const bias = upload(gpu, [t, n], biasData);
    const y = createTensor(gpu, shape);
    const got = await runAndRead(gpu, biasAdd(gpu, x, bias, y), y);
    assertClose(got, ref.biasAdd(xData, biasData, shape), { label: `biasAdd [${shape}]` });
    for (const u of [x, bias, y]) u.destroy();
  }
});

Deno.test("elementwise ops reject mismatched shapes and aliased outputs", async () => {
  const gpu = await getGpu();
  const a = createTensor(gpu, [2, 3]);
  const b = createTensor(gpu, [5]);
  const c = createTensor(gpu, [6]);
  const bias = createTensor(gpu, [2, 4]);
  const rejects = (f: () => unknown, message: RegExp) =>
    assertThrows(f, { name: "RangeError", message });
  rejects(() => activation(gpu, a, b, { activation: "relu" }), /6 elements.*got \[5\]/);
  rejects(() => activation(gpu, a, a, { activation: "relu" }), /buffer of one of its inputs/);
  rejects(() => activation(gpu, a, c, { activation: "gelu" as Activation }), /Unknown activation/);
  rejects(() => activation(gpu, a, c, { activation: "leaky_relu", slope: -1 }), /slope/);
  rejects(() => activation(gpu, a, c, { activation: "tanh", scale: 0 }), /scale/);
  rejects(() => axpby(gpu, a, c, { b }), /axpby expects b/);
  rejects(() => biasAdd(gpu, a.reshape([2, 1, 3]), bias, c), /bias \[2, 3\]/);
  for (const t of [a, b, c, bias]) t.destroy();
});
