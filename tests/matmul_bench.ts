/**
 * Matmul throughput: `deno bench -A tests/matmul_bench.ts`. Each iteration submits the same
 * dispatch several times in one command buffer and waits for the queue, so per-submit overhead is
 * amortised. Every bench of a group does the same work, named in the group (GFLOP/s = GFLOP per
 * iteration / time per iteration); a group compares, for one shape, the op's default kernel, other
 * register blockings of the tiled kernel (forced through its override constants), the same
 * blocking with one-float loads (the kernel used for sizes that are not multiples of 4), and the
 * naive kernel as the baseline.
 *
 * @module
 */
import { type Dispatch, grid, pipeline, prepare, run, sync, Uniform } from "../src/gpu/kernel.ts";
import { createTensor, type Tensor } from "../src/gpu/tensor.ts";
import { unusedTextures } from "../src/gpu/texture.ts";
import { matmul } from "../src/ops/matmul.ts";
import { getGpu, type Gpu, uniform, upload } from "./util.ts";

const gpu = await getGpu();

/** A dispatch of one entry point of shaders/matmul.wgsl with a forced register blocking. */
function forced(
  gpu: Gpu,
  t: { a: Tensor; b: Tensor; out: Tensor },
  kernel: { entry: "tiled" | "tiled_scalar"; rb: number; cb: number },
): Dispatch {
  const [M, K] = t.a.shape as [number, number];
  const N = t.b.shape[1]!;
  const tilesM = Math.ceil(M / (4 * kernel.rb));
  const tilesN = Math.ceil(N / (32 * kernel.cb));
  const uniformBlock = new Uniform(gpu, [
    ["u32", M],
    ["u32", N],
    ["u32", K],
    ["u32", tilesM],
    ["u32", tilesN],
    ["u32", tilesM * tilesN],
    ["f32", 1],
    ["f32", 0.01],
    ["u32", 0],
  ]);
  const pipe = pipeline(gpu, "matmul", {
    entry: kernel.entry,
    constants: { RB: kernel.rb, CB: kernel.cb },
  });
  // The tiled entry point binds a texture per operand, unread without TEX.
  const textures = kernel.entry === "tiled" ? unusedTextures(gpu, 2) : undefined;
  return prepare(gpu, pipe, [t.a, t.b, t.a, t.out], grid(tilesM * tilesN), uniformBlock, textures);
}

/**
 * [M, K, N, dispatches per submit]: square sizes and a generator head ([T, 100] x [100, n] for
 * T = 64 tasks); about 0.1 s of work per iteration for the tiled kernel.
 */
const SHAPES = [
  [256, 256, 256, 32],
  [512, 512, 512, 4],
  [1024, 1024, 1024, 1],
  [64, 100, 6400, 16],
] as const;

for (const [M, K, N, repeats] of SHAPES) {
  const a = upload(gpu, [M, K], uniform(M * K, 1));
  const b = upload(gpu, [K, N], uniform(K * N, 2));
  const out = createTensor(gpu, [M, N]);
  const gflop = (2 * M * N * K * repeats) / 1e9;
  const kernels: { name: string; dispatch: Dispatch; baseline?: boolean }[] = [
    {
      name: "tiled (built-in default)",
      dispatch: matmul(gpu, a, b, out, { variant: "tiled" })[0]!,
    },
    {
      name: "workgroup (32x32 tiles in workgroup memory)",
      dispatch: matmul(gpu, a, b, out, { variant: "workgroup" })[0]!,
    },
    {
      name: "workgroup_large (64x64 tiles in workgroup memory)",
      dispatch: matmul(gpu, a, b, out, { variant: "workgroup_large" })[0]!,
    },
    { name: "naive", dispatch: matmul(gpu, a, b, out, { variant: "naive" })[0]!, baseline: true },
  ];
  if (M <= 512) {
    for (const [rb, cb] of [[4, 2], [2, 2], [4, 1], [1, 1]] as const) {
      kernels.push({
        name: `tiled ${4 * rb}x${4 * cb} per invocation`,
        dispatch: forced(gpu, { a, b, out }, { entry: "tiled", rb, cb }),
      });
    }
    kernels.push({
      name: "tiled_scalar 16x8 per invocation",
      dispatch: forced(gpu, { a, b, out }, { entry: "tiled_scalar", rb: 4, cb: 2 }),
    });
  }
  for (const { name, dispatch, baseline } of kernels) {
    const dispatches = Array<Dispatch>(repeats).fill(dispatch);
    Deno.bench({
      name,
      group: `${M}x${K}x${N}, ${repeats} per submit = ${gflop.toPrecision(3)} GFLOP per iteration`,
      baseline,
      // The naive kernel runs at about 1 GFLOP/s: few iterations keep the whole file near a minute.
      n: baseline ? 2 : 5,
      warmup: 1,
      async fn() {
        run(gpu, dispatches);
        await sync(gpu);
      },
    });
  }
}
