/**
 * Conv2d throughput on seed_cnn's first two layers (5x5, stride 2, padding 2, 16 channels) for
 * T = 16 tasks of B = 32 images: `deno bench -A tests/conv2d_bench.ts`. Each iteration submits the
 * group's dispatches `repeats` times in one command buffer and waits for the queue, so the
 * per-submit latency is amortised. A group compares the op's default (tiled) kernels with the
 * naive one-output-per-invocation kernels on the same work, named in the group with its GFLOP
 * (2 x multiply-adds) per iteration: GFLOP/s = GFLOP per iteration / time per iteration. The first
 * layer's input gradient is left out: training never needs the gradient of the images.
 *
 * @module
 */
import { type Dispatch, run, sync } from "../src/gpu/kernel.ts";
import { createTensor } from "../src/gpu/tensor.ts";
import {
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  type Conv2dVariant,
} from "../src/ops/conv2d.ts";
import { getGpu, uniform, upload } from "./util.ts";

const gpu = await getGpu();
const T = 16;
const B = 32;
const OPTIONS = { stride: 2, padding: 2 };

/** seed_cnn's layers on 32x32 RGB images: [name, C, H (= W)], each with 16 5x5 filters. */
const LAYERS = [["conv1", 3, 32], ["conv2", 16, 16]] as const;

for (const [name, C, H] of LAYERS) {
  const O = 16;
  const k = 5;
  const Ho = H / 2;
  const x = upload(gpu, [T, B, C, H, H], uniform(T * B * C * H * H, 1));
  const w = upload(gpu, [T, O, C, k, k], uniform(T * O * C * k * k, 2, -0.2, 0.2));
  const bias = upload(gpu, [T, O], uniform(T * O, 3));
  const y = createTensor(gpu, [T, B, O, Ho, Ho]);
  const dy = upload(gpu, [T, B, O, Ho, Ho], uniform(T * B * O * Ho * Ho, 4));
  const dx = createTensor(gpu, [T, B, C, H, H]);
  const dw = createTensor(gpu, [T, O, C, k, k]);
  const gflop = (2 * T * B * O * Ho * Ho * C * k * k) / 1e9;
  const passes: {
    pass: string;
    repeats: number;
    make: (variant: Conv2dVariant) => Dispatch[];
  }[] = [
    {
      pass: "forward (leaky_relu)",
      repeats: 2,
      make: (variant) =>
        conv2d(gpu, x, w, bias, y, { ...OPTIONS, activation: "leaky_relu", variant }),
    },
    {
      pass: "backward weight",
      repeats: 2,
      make: (variant) => conv2dBackwardWeight(gpu, x, dy, dw, { ...OPTIONS, variant }),
    },
  ];
  if (name !== "conv1") {
    passes.push({
      pass: "backward input",
      // The naive kernel takes seconds here.
      repeats: 1,
      make: (variant) => conv2dBackwardInput(gpu, dy, w, dx, { ...OPTIONS, variant }),
    });
  }
  for (const { pass, repeats, make } of passes) {
    const group = `${name} ${pass}, [${T}, ${B}, ${C}, ${H}, ${H}] -> [${T}, ${B}, ${O}, ${Ho}, ` +
      `${Ho}], ${repeats} per submit = ${(gflop * repeats).toPrecision(3)} GFLOP per iteration`;
    for (const variant of ["tiled", "gemm", "naive"] as const) {
      const dispatches = Array.from({ length: repeats }, () => make(variant)).flat();
      Deno.bench({
        name: variant === "tiled"
          ? "tiled (built-in default)"
          : variant === "gemm"
          ? "gemm (implicit GEMM, workgroup-memory tiles)"
          : "naive",
        group,
        baseline: variant === "naive",
        // The naive kernels run at well under 1 GFLOP/s: few iterations keep the file short.
        n: variant === "naive" ? 1 : 5,
        warmup: 1,
        async fn() {
          run(gpu, dispatches);
          await sync(gpu);
        },
      });
    }
  }
}
