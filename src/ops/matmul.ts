/**
 * Matmul: batched matrix products with a fused bias / activation / scale epilogue
 * (shaders/matmul.wgsl). The backward of a product is two more products (dA = dOut @ op(B)^T,
 * dB = op(A)^T @ dOut), which the tape builds from this same op with the transpose flags.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  chunkTasks,
  fitsStaging,
  type StagedTextures,
  throughStaging,
  unusedTextures,
} from "../gpu/texture.ts";
import { sizeClass, tunedDispatch } from "../gpu/tune.ts";
import { type Activation, activationCode } from "./activation.ts";

/** Options of `matmul`. */
export interface MatmulOptions {
  /** `a` is stored transposed, as [T, K, M] (default false). */
  transA?: boolean;
  /** `b` is stored transposed, as [T, N, K] (default false). */
  transB?: boolean;
  /** Bias [T, N] ([N] when T = 1): row t is added to every row of out[t]. */
  bias?: Tensor;
  /** Activation applied after the bias (default "identity"). */
  activation?: Activation;
  /** Negative slope of "leaky_relu" (default 0.01). */
  slope?: number;
  /** Factor applied to the result after the activation (default 1). */
  scale?: number;
  /** Add the result to `out` instead of overwriting it; needs no bias and "identity". */
  accumulate?: boolean;
  /**
   * Kernel: "tiled" (register-blocked, best on software rasterisers), "tiled_texture" (the same,
   * reading a and b through textures copied in first, see src/gpu/texture.ts; "tiled" where they
   * do not fit), "workgroup" (32 x 32 tiles staged in workgroup memory, for GPUs),
   * "workgroup_large" (64 x 64 tiles, 256 invocations), "workgroup_128" (128 x 128 tiles, 8 x 8
   * outputs per invocation, for large products) or "naive" (one output per invocation, the
   * benchmark's baseline). Unset: the tuner's choice among {@linkcode MATMUL_TUNED}
   * (src/gpu/tune.ts).
   */
  variant?: MatmulVariant;
}

/** The kernels of shaders/matmul.wgsl. */
export type MatmulVariant =
  | "tiled"
  | "tiled_texture"
  | "workgroup"
  | "workgroup_large"
  | "workgroup_128"
  | "naive";

/** The variants the tuner times for a matmul, the built-in default first. */
export const MATMUL_TUNED: readonly MatmulVariant[] = [
  "tiled",
  "tiled_texture",
  "workgroup",
  "workgroup_large",
  "workgroup_128",
];

/** Every matmul variant: the tuner's candidates, then the naive baseline. */
export const MATMUL_VARIANTS: readonly MatmulVariant[] = [...MATMUL_TUNED, "naive"];

/**
 * The candidates for a product of out[T, M, N] on `gpu`: 128 x 128 tiles only where both M and N
 * reach 128 (rounded up to powers of 2, as the shape classes are), since smaller outputs would
 * leave most of such a tile idle; "tiled_texture" only where the tiled kernel reads vec4s (else
 * it is "tiled"); on a GPU also "naive" (one output per invocation), which on an
 * H200 was the fastest for some of the step's small products; on a software adapter it never is.
 */
function tunedVariants(
  gpu: Gpu,
  s: { M: number; N: number; vec4: boolean },
): readonly MatmulVariant[] {
  const big = sizeClass(s.M) >= 128 && sizeClass(s.N) >= 128;
  return [
    ...MATMUL_TUNED.filter((v) =>
      (big || v !== "workgroup_128") && (s.vec4 || v !== "tiled_texture")
    ),
    ...(gpu.isFallback ? [] : ["naive" as const]),
  ];
}

/** Register blocking of the tiled kernels: 4 x 4 blocks per invocation along M and along N. */
interface Blocking {
  rb: number;
  cb: number;
}

/**
 * Prepares out[t] = scale * act(op(a[t]) @ op(b[t]) + bias[t]) for t < T, where op transposes
 * when asked; a: [T, M, K], b: [T, K, N], out: [T, M, N]. 2-D tensors are taken as T = 1.
 * `out` must not share a buffer with the inputs.
 */
export function matmul(
  gpu: Gpu,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  options: MatmulOptions = {},
): Dispatch[] {
  const {
    transA = false,
    transB = false,
    bias,
    activation = "identity",
    slope = 0.01,
    scale = 1,
    accumulate = false,
  } = options;
  const [T, ar, ac] = batched(a, "a");
  const [bT, br, bc] = batched(b, "b");
  const [M, K] = transA ? [ac, ar] : [ar, ac];
  const [bK, N] = transB ? [bc, br] : [br, bc];
  if (bT !== T || bK !== K) {
    throw new RangeError(
      `Matmul of a [${a.shape}]${transA ? " (transposed)" : ""} needs b with ${T} batch ` +
        `entries and ${K} rows of op(b), got b [${b.shape}]${transB ? " (transposed)" : ""}`,
    );
  }
  const [oT, oM, oN] = batched(out, "out");
  if (oT !== T || oM !== M || oN !== N) {
    throw new RangeError(`Matmul output must have shape [${T}, ${M}, ${N}], got [${out.shape}]`);
  }
  if (bias) {
    const fits = bias.shape.length === 2
      ? bias.shape[0] === T && bias.shape[1] === N
      : bias.shape.length === 1 && T === 1 && bias.shape[0] === N;
    if (!fits) {
      throw new RangeError(`Matmul bias must have shape [${T}, ${N}], got [${bias.shape}]`);
    }
  }
  if (accumulate && (bias || activation !== "identity")) {
    throw new RangeError(
      `Matmul with accumulate needs activation 'identity' and no bias, got activation ` +
        `'${activation}'${bias ? " and a bias" : ""}`,
    );
  }
  const act = activationCode(activation);
  for (const [name, t] of [["a", a], ["b", b], ["bias", bias]] as const) {
    if (t && t.buffer === out.buffer) {
      throw new RangeError(`Matmul output must not share a buffer with ${name}`);
    }
  }
  for (const [name, t] of [["a", a], ["b", b], ["bias", bias], ["out", out]] as const) {
    if (t && t.dtype !== "f32") throw new RangeError(`Matmul ${name} must be f32, got ${t.dtype}`);
  }
  if (T * M * N === 0) return [];
  const sizes = { T, M, N, K, transA, transB, bias, act, scale, slope, accumulate };
  if (options.variant) return [prepareMatmul(gpu, [a, b, out], sizes, options.variant)];
  const measure = (variant: string) => {
    const fresh = [a, b, out, ...(bias ? [bias] : [])].map((t) => createTensor(gpu, t.shape));
    const [fa, fb, fo, fbias] = fresh as [Tensor, Tensor, Tensor, Tensor | undefined];
    return {
      dispatch: prepareMatmul(gpu, [fa, fb, fo], { ...sizes, bias: fbias }, variant),
      destroy: () => fresh.forEach((t) => t.destroy()),
    };
  };
  return [tunedDispatch(gpu, {
    kernel: "matmul",
    shapeClass: `${transA ? "t" : "n"}${transB ? "t" : "n"} T${sizeClass(T)} M${sizeClass(M)} ` +
      `N${sizeClass(N)} K${sizeClass(K)}`,
    variants: tunedVariants(gpu, { M, N, vec4: vec4Loads(sizes) }),
    build: (variant) => prepareMatmul(gpu, [a, b, out], sizes, variant),
    measure,
  })];
}

interface MatmulSizes {
  T: number;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  bias?: Tensor;
  act: number;
  scale: number;
  slope: number;
  accumulate: boolean;
}

/**
 * The dispatch of a checked matmul with the given kernel (through the staging texture, one per
 * chunk of batch entries, chained).
 */
function prepareMatmul(
  gpu: Gpu,
  [a, b, out]: [Tensor, Tensor, Tensor],
  s: MatmulSizes,
  variant: string,
): Dispatch {
  const { T, M, N, K, transA, transB, bias, act, scale, slope, accumulate } = s;
  const tiled = variant === "tiled" || variant === "tiled_texture";
  const vec4 = tiled && vec4Loads(s);
  // Batch entries per dispatch through the staging texture (0: not through it).
  const chunk = vec4 && variant === "tiled_texture" && fitsStaging(a) && fitsStaging(b)
    ? chunkTasks(gpu, T, [M * K, K * N])
    : 0;
  const { rb, cb } = blocking(M, N);
  // Rows and columns of out per workgroup: 8 x 8 invocations for naive, 8 invocations side by side
  // for the tiled kernels, 32 x 32, 64 x 64 or 128 x 128 for the workgroup-memory kernels.
  const staged = variant === "workgroup"
    ? 32
    : variant === "workgroup_large"
    ? 64
    : variant === "workgroup_128"
    ? 128
    : undefined;
  const tileM = variant === "naive" ? 8 : staged ?? 4 * rb;
  const tileN = variant === "naive" ? 8 : staged ?? 32 * cb;
  const tilesM = Math.ceil(M / tileM);
  const tilesN = Math.ceil(N / tileN);
  const constants: Record<string, number> = {
    TRANS_A: transA ? 1 : 0,
    TRANS_B: transB ? 1 : 0,
    ACT: act,
    HAS_BIAS: bias ? 1 : 0,
    ACCUMULATE: accumulate ? 1 : 0,
  };
  if (tiled) Object.assign(constants, { RB: rb, CB: cb });
  if (vec4) constants.TEX = chunk > 0 ? 1 : 0;
  const entry = tiled
    ? (vec4 ? "tiled" : "tiled_scalar")
    : variant === "workgroup"
    ? "workgroup_tiled"
    : variant === "workgroup_large" || variant === "workgroup_128"
    ? variant
    : "naive";
  const pipe = pipeline(gpu, "matmul", { entry, constants });
  // Without a bias the kernel never reads its binding, but the layout still has one; `a` is
  // read-only too, so binding it twice is allowed.
  const bindings = [a, b, bias ?? a, out];
  // The tiled entry point also binds a texture per operand (1 x 1 and unread without TEX).
  const part = (first: number, count: number, textures?: StagedTextures) => {
    const groups = count * tilesM * tilesN;
    const uniform = new Uniform(gpu, [
      ["u32", M],
      ["u32", N],
      ["u32", K],
      ["u32", tilesM],
      ["u32", tilesN],
      ["u32", groups],
      ["f32", scale],
      ["f32", slope],
      ["u32", first],
    ]);
    return prepare(gpu, pipe, bindings, grid(groups), uniform, textures);
  };
  if (!vec4) return part(0, T);
  if (chunk === 0) return part(0, T, unusedTextures(gpu, 2));
  const operands = [{ tensor: a, perTask: M * K }, { tensor: b, perTask: K * N }];
  return throughStaging(gpu, operands, T, chunk, part);
}

/**
 * Whether the tiled kernel reads vec4s: the contiguous dimension of each operand (and of out) is
 * a multiple of 4.
 */
function vec4Loads(s: MatmulSizes): boolean {
  return s.K > 0 && s.N % 4 === 0 && (s.transA ? s.M % 4 === 0 : s.K % 4 === 0) &&
    (!s.transB || s.K % 4 === 0);
}

/** The shape of a 2-D or 3-D tensor as [T, rows, cols]. */
function batched(t: Tensor, name: string): [number, number, number] {
  const s = t.shape;
  if (s.length === 2) return [1, s[0]!, s[1]!];
  if (s.length === 3) return [s[0]!, s[1]!, s[2]!];
  throw new RangeError(`Matmul ${name} must be 2-D or 3-D ([T, rows, cols]), got [${s}]`);
}

/**
 * Register blocking for an M x N output: RB x CB blocks of 4 x 4 per invocation. On llvmpipe a
 * load costs about 50 times an FMA per step of 4 along K (4 (RB + CB) vec4 loads feed
 * 64 RB CB FMAs), so big blocks win unless they mostly cover rows or columns past the end.
 */
function blocking(M: number, N: number): Blocking {
  let best = { rb: 4, cb: 2 };
  let bestCost = Infinity;
  for (let rb = 4; rb >= 1; rb--) {
    for (let cb = 2; cb >= 1; cb--) {
      const invocations = Math.ceil(M / (4 * rb)) * Math.ceil(N / (32 * cb)) * 8;
      const cost = invocations * (4 * (rb + cb) * 50 + 64 * rb * cb);
      if (cost < bestCost) {
        bestCost = cost;
        best = { rb, cb };
      }
    }
  }
  return best;
}
