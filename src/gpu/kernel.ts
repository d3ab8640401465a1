/**
 * Kernels: WGSL files from `shaders/`, compute pipelines cached by (shader, entry point,
 * override constants), uniform parameter blocks, and prepared dispatches that a step replays.
 *
 * @module
 */
import type { Gpu } from "./device.ts";
import type { Tensor } from "./tensor.ts";

const shaderDir = new URL("../../shaders/", import.meta.url);
const sources = new Map<string, string>();
const modules = new WeakMap<GPUDevice, Map<string, GPUShaderModule>>();
const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/** Largest workgroup count per grid dimension that every WebGPU device accepts. */
export const MAX_GROUPS_PER_DIM = 65535;

/** The text of `shaders/<name>.wgsl`. */
export function shaderSource(name: string): string {
  let text = sources.get(name);
  if (text === undefined) {
    text = Deno.readTextFileSync(new URL(`${name}.wgsl`, shaderDir));
    sources.set(name, text);
  }
  return text;
}

/**
 * The compute pipeline for `entry` of `shaders/<shader>.wgsl` with the given override constants,
 * built once per device and then cached.
 */
export function pipeline(
  gpu: Gpu,
  shader: string,
  options: { entry?: string; constants?: Record<string, number> } = {},
): GPUComputePipeline {
  const entry = options.entry ?? "main";
  const constants = options.constants ?? {};
  const key = `${shader}:${entry}:${JSON.stringify(Object.entries(constants).sort())}`;
  let cache = pipelines.get(gpu.device);
  if (!cache) pipelines.set(gpu.device, cache = new Map());
  let found = cache.get(key);
  if (!found) {
    let mods = modules.get(gpu.device);
    if (!mods) modules.set(gpu.device, mods = new Map());
    let module = mods.get(shader);
    if (!module) {
      module = gpu.device.createShaderModule({ label: shader, code: shaderSource(shader) });
      mods.set(shader, module);
    }
    found = gpu.device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint: entry, constants },
    });
    cache.set(key, found);
  }
  return found;
}

/** A field of a uniform block: its WGSL type and value. */
export type Field = ["u32" | "i32" | "f32", number];

/**
 * A uniform buffer holding a WGSL struct of 4-byte scalar fields in declaration order.
 * Created once when a dispatch is prepared; `set` rewrites it (e.g. a learning rate per step).
 */
export class Uniform {
  /** The GPU buffer bound as `var<uniform>`. */
  readonly buffer: GPUBuffer;
  readonly #types: Field[0][];
  readonly #data: ArrayBuffer;

  /** Creates the buffer and writes the initial values. */
  constructor(readonly gpu: Gpu, fields: Field[]) {
    this.#types = fields.map((f) => f[0]);
    const size = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
    this.#data = new ArrayBuffer(size);
    this.buffer = gpu.device.createBuffer({
      size,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.set(fields.map((f) => f[1]));
  }

  /** Rewrites every field (same order and types as at construction). */
  set(values: readonly number[]): void {
    const view = new DataView(this.#data);
    values.forEach((v, i) => {
      const type = this.#types[i];
      if (type === "f32") view.setFloat32(i * 4, v, true);
      else if (type === "i32") view.setInt32(i * 4, v, true);
      else view.setUint32(i * 4, v, true);
    });
    this.gpu.device.queue.writeBuffer(this.buffer, 0, this.#data);
  }

  /** Frees the buffer. */
  destroy(): void {
    this.buffer.destroy();
  }
}

/**
 * A buffer range copied into a texture just before a dispatch that reads it there (outside any
 * compute pass; WebGPU orders the copy after the dispatches before it). See src/gpu/texture.ts.
 */
export interface TextureCopy {
  /** Buffer and byte offset of the first float; the range is `texels` vec4s long. */
  readonly buffer: GPUBuffer;
  readonly offset: number;
  readonly texels: number;
  /** rgba32float texture, `TEXELS_PER_ROW` texels wide, with at least enough rows. */
  readonly texture: GPUTexture;
  /** Its array layer that receives the range. */
  readonly layer: number;
}

/** A prepared dispatch: everything needed to encode it again and again without allocation. */
export interface Dispatch {
  /** Pipeline to run. */
  readonly pipeline: GPUComputePipeline;
  /** Bind group 0, built once. */
  readonly bindGroup: GPUBindGroup;
  /** Workgroup counts (x, y, z). */
  readonly groups: readonly [number, number, number];
  /** The uniform block of this dispatch, if any, so callers can update per-step values. */
  readonly uniform?: Uniform;
  /** Copies into textures to make before the dispatch (kernels that read through textures). */
  readonly copies?: readonly TextureCopy[];
  /**
   * Dispatches that run right after this one as part of the same op (a kernel run over chunks of
   * its tasks, each copying its slice into the staging texture first).
   */
  readonly then?: readonly Dispatch[];
}

/** The uniform blocks of `d` and of the dispatches it runs after it. */
export function uniformsOf(d: Dispatch): Uniform[] {
  return [...(d.uniform ? [d.uniform] : []), ...(d.then ?? []).flatMap(uniformsOf)];
}

/**
 * One op's dispatches over chunks of its tasks as a single dispatch: the first, with the others
 * in its `then`.
 */
export function chained(parts: readonly Dispatch[]): Dispatch {
  const [first, ...rest] = parts;
  return rest.length ? { ...first!, then: rest } : first!;
}

/**
 * Prepares a dispatch of `pipeline` with bind group 0 = [...tensors or buffers, uniform?] in
 * binding order 0, 1, 2, ...; the uniform (if any) takes the last binding.
 */
export function prepare(
  gpu: Gpu,
  pipe: GPUComputePipeline,
  bindings: readonly (Tensor | GPUBufferBinding)[],
  groups: readonly [number, number, number],
  uniform?: Uniform,
  textures?: { views: Record<number, GPUTextureView>; copies: readonly TextureCopy[] },
): Dispatch {
  const entries: GPUBindGroupEntry[] = bindings.map((b, i) => ({
    binding: i,
    resource: "binding" in b ? b.binding : b,
  }));
  bindings.forEach((b, i) => checkBindingSize(gpu, pipe, i, "binding" in b ? b.binding : b));
  if (uniform) entries.push({ binding: entries.length, resource: { buffer: uniform.buffer } });
  for (const [binding, view] of Object.entries(textures?.views ?? {})) {
    entries.push({ binding: Number(binding), resource: view });
  }
  for (const g of groups) {
    if (g > MAX_GROUPS_PER_DIM) {
      throw new RangeError(`Dispatch of ${g} workgroups in one dimension exceeds 65535`);
    }
  }
  const bindGroup = gpu.device.createBindGroup({
    layout: pipe.getBindGroupLayout(0),
    entries,
  });
  const copies = textures?.copies.length ? textures.copies : undefined;
  return { pipeline: pipe, bindGroup, groups, uniform, copies };
}

/**
 * Refuses a storage binding above the device's `maxStorageBufferBindingSize` before WebGPU does:
 * its own refusal arrives later as an uncaught validation error naming neither the kernel nor the
 * size. Batches are the usual cause, so the message says what to lower.
 */
function checkBindingSize(
  gpu: Gpu,
  pipe: GPUComputePipeline,
  index: number,
  b: GPUBufferBinding,
): void {
  const bytes = b.size ?? b.buffer.size - (b.offset ?? 0);
  const most = gpu.limits.maxStorageBufferBindingSize;
  if (bytes <= most) return;
  const kernel = pipe.label ? pipe.label.split(":").slice(0, 2).join(":") : "a kernel";
  throw new RangeError(
    `${kernel} needs ${mib(bytes)} in one buffer (binding ${index}), above ` +
      `this adapter's largest storage binding of ${mib(most)}: use fewer images or tasks at once ` +
      `or a narrower network`,
  );
}

/** Bytes in MiB with one decimal, e.g. "128.0 MiB". */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * Splits `n` workgroups into an (x, y) grid within the per-dimension limit; kernels recover the
 * linear index as `wid.x + wid.y * num_workgroups.x` and skip indices >= n.
 */
export function grid(n: number): [number, number, number] {
  if (n <= MAX_GROUPS_PER_DIM) return [Math.max(1, n), 1, 1];
  const y = Math.ceil(n / MAX_GROUPS_PER_DIM);
  return [Math.ceil(n / y), y, 1];
}

/**
 * Encodes dispatches in order into one compute pass (WebGPU orders their memory effects), ended
 * and begun again around the texture copies a dispatch asks for. With `timestamps`, empty passes
 * before and after write timestamps 0 and 1 of the query set around all of it.
 */
export function encode(
  encoder: GPUCommandEncoder,
  dispatches: readonly Dispatch[],
  timestamps?: GPUQuerySet,
): void {
  if (timestamps) {
    encoder.beginComputePass({
      timestampWrites: { querySet: timestamps, beginningOfPassWriteIndex: 0 },
    }).end();
  }
  let pass: GPUComputePassEncoder | undefined;
  const one = (d: Dispatch) => {
    if (d.copies) {
      pass?.end();
      pass = undefined;
      for (const c of d.copies) copyToTexture(encoder, c);
    }
    pass ??= encoder.beginComputePass();
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(d.groups[0], d.groups[1], d.groups[2]);
    d.then?.forEach(one);
  };
  dispatches.forEach(one);
  (pass as GPUComputePassEncoder | undefined)?.end();
  if (timestamps) {
    encoder.beginComputePass({
      timestampWrites: { querySet: timestamps, endOfPassWriteIndex: 1 },
    }).end();
  }
}

/** Texels per row of the textures that kernels read buffers through (16 KB rows). */
export const TEXELS_PER_ROW = 1024;

/** Encodes `copy`: whole rows of TEXELS_PER_ROW texels, then the rest of the last row. */
function copyToTexture(encoder: GPUCommandEncoder, copy: TextureCopy): void {
  const rows = Math.floor(copy.texels / TEXELS_PER_ROW);
  const rest = copy.texels - rows * TEXELS_PER_ROW;
  const bytesPerRow = TEXELS_PER_ROW * 16;
  if (rows > 0) {
    encoder.copyBufferToTexture(
      { buffer: copy.buffer, offset: copy.offset, bytesPerRow, rowsPerImage: rows },
      { texture: copy.texture, origin: [0, 0, copy.layer] },
      [TEXELS_PER_ROW, rows, 1],
    );
  }
  if (rest > 0) {
    encoder.copyBufferToTexture(
      { buffer: copy.buffer, offset: copy.offset + rows * bytesPerRow, bytesPerRow },
      { texture: copy.texture, origin: [0, rows, copy.layer] },
      [rest, 1, 1],
    );
  }
}

/** Submits dispatches as one command buffer; does not wait for them. */
export function run(gpu: Gpu, dispatches: readonly Dispatch[]): void {
  const encoder = gpu.device.createCommandEncoder();
  encode(encoder, dispatches);
  gpu.device.queue.submit([encoder.finish()]);
}

/** Resolves when everything submitted so far has finished on the GPU. */
export function sync(gpu: Gpu): Promise<void> {
  return gpu.device.queue.onSubmittedWorkDone();
}
