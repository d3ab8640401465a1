/**
 * Textures that kernels read buffers through. On llvmpipe a storage-buffer load is a loop over
 * the 8 lanes of a SIMD vector, with a bounds check and a branch per lane and component, about
 * 110 cycles for a vec4; a texel fetch is one vectorised gather, about 45 (measured on this
 * project's 2-core machine with Mesa 22.3). So a kernel bound by its loads runs faster when it
 * reads its operands from a texture that a copy filled just before, even counting the copy.
 *
 * Each device has one staging texture of two layers (one per operand), each TEXELS_PER_ROW x
 * STAGING_ROWS rgba32float texels (8 MiB; see setStagingRows): vec4 i of an operand is texel (i % TEXELS_PER_ROW,
 * i / TEXELS_PER_ROW) of its layer. A batched kernel whose operands are larger runs in chunks of
 * tasks, each copying its slice in just before it runs; WebGPU orders every copy after the
 * dispatches before it, so all kernels share the one texture and the memory it adds stays fixed.
 *
 * @module
 */
import type { Gpu } from "./device.ts";
import { chained, type Dispatch, TEXELS_PER_ROW, type TextureCopy } from "./kernel.ts";
import type { Tensor } from "./tensor.ts";

/** Rows of each layer of the staging texture unless {@linkcode setStagingRows} says otherwise. */
export const STAGING_ROWS = 512;

interface Textures {
  rows: number;
  staging?: GPUTexture;
  unused: GPUTexture;
}

const textures = new WeakMap<GPUDevice, Textures>();

/**
 * Sets the rows of each layer of the device's staging texture (default STAGING_ROWS, 8 MiB a
 * layer): fewer rows take less memory and split kernels into more chunks. Destroys the current
 * texture, so dispatches prepared before that read through it can no longer run.
 */
export function setStagingRows(gpu: Gpu, rows: number): void {
  if (!Number.isInteger(rows) || rows < 1 || rows > gpu.limits.maxTextureDimension2D) {
    throw new RangeError(
      `Staging rows must be an integer in [1, ${gpu.limits.maxTextureDimension2D}], got ${rows}`,
    );
  }
  releaseStaging(gpu);
  entry(gpu).rows = rows;
}

/** The rows of each layer of the device's staging texture. */
export function stagingRows(gpu: Gpu): number {
  return entry(gpu).rows;
}

/**
 * Tasks per chunk for a kernel over `tasks` tasks whose operands take `perTask` floats each per
 * task: the most that fit a staging layer, spread evenly over the chunks; 0 where one task's
 * slice does not fit or does not start on a vec4.
 */
export function chunkTasks(gpu: Gpu, tasks: number, perTask: readonly number[]): number {
  if (tasks > 1 && perTask.some((n) => n % 4 !== 0)) return 0;
  const texels = stagingRows(gpu) * TEXELS_PER_ROW;
  const most = Math.min(
    tasks,
    ...perTask.map((n) => Math.floor(texels / Math.ceil(n / 4))),
  );
  if (most < 1) return 0;
  return Math.ceil(tasks / Math.ceil(tasks / most));
}

/**
 * The copy of tasks [first, first + count) of `t` (`perTask` floats each) into `layer` of the
 * staging texture, for a dispatch's `copies`. The last vec4 may run past the slice (never past
 * the buffer; {@linkcode fitsStaging} checks).
 */
export function stagingCopy(
  gpu: Gpu,
  t: Tensor,
  slice: { first: number; count: number; perTask: number },
  layer: number,
): TextureCopy {
  return {
    buffer: t.buffer,
    offset: t.byteOffset + slice.first * slice.perTask * 4,
    texels: Math.ceil((slice.count * slice.perTask) / 4),
    texture: stagingTexture(gpu),
    layer,
  };
}

/** Whether `t` starts on a vec4 and its last vec4 (which may run past its end) is in its buffer. */
export function fitsStaging(t: Tensor): boolean {
  return t.byteOffset % 16 === 0 && t.byteOffset + Math.ceil(t.size / 4) * 16 <= t.buffer.size;
}

/** The view of `layer` of the staging texture that a kernel binds. */
export function stagingView(gpu: Gpu, layer: number): GPUTextureView {
  return stagingTexture(gpu).createView({
    dimension: "2d",
    baseArrayLayer: layer,
    arrayLayerCount: 1,
  });
}

/** A 1 x 1 texture to bind where a kernel's texture binding goes unread (storage variants). */
export function unusedView(gpu: Gpu): GPUTextureView {
  return entry(gpu).unused.createView();
}

/** The device's staging texture, made on first use. */
function stagingTexture(gpu: Gpu): GPUTexture {
  const e = entry(gpu);
  if (!e.staging) {
    e.staging = gpu.device.createTexture({
      size: [TEXELS_PER_ROW, e.rows, 2],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
    });
    gpu.memory.track(e.staging, stagingBytes(e.rows));
  }
  return e.staging;
}

function entry(gpu: Gpu): Textures {
  let e = textures.get(gpu.device);
  if (!e) {
    const unused = gpu.device.createTexture({
      size: [1, 1],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING,
    });
    textures.set(gpu.device, e = { rows: STAGING_ROWS, unused });
  }
  return e;
}

/** Bytes of a staging texture of `rows` rows a layer. */
function stagingBytes(rows: number): number {
  return TEXELS_PER_ROW * rows * 2 * 16;
}

/**
 * Destroys the device's staging texture (dispatches prepared before that read through it can no
 * longer run); the next use makes a new one. For measuring the memory of what comes after.
 */
export function releaseStaging(gpu: Gpu): void {
  const e = textures.get(gpu.device);
  e?.staging?.destroy();
  if (e) e.staging = undefined;
}

/** Bytes of the device's staging texture alive now (0 before its first use). */
export function stagingLive(gpu: Gpu): number {
  const e = textures.get(gpu.device);
  return e?.staging ? stagingBytes(e.rows) : 0;
}

/** The texture bindings of a kernel that reads operands through the staging texture. */
export interface StagedTextures {
  /** Binding 5 + layer: the view of each operand's layer (or the 1 x 1 placeholder). */
  views: Record<number, GPUTextureView>;
  /** The copies to make before the dispatch (none for placeholders). */
  copies: TextureCopy[];
}

/**
 * Bindings 5 .. 5 + count - 1 of a kernel that reads `count` operands through textures but not
 * this time (TEX = 0): the 1 x 1 placeholder, never read.
 */
export function unusedTextures(gpu: Gpu, count: number): StagedTextures {
  const views: Record<number, GPUTextureView> = {};
  for (let layer = 0; layer < count; layer++) views[5 + layer] = unusedView(gpu);
  return { views, copies: [] };
}

/**
 * An op over `tasks` tasks run through the staging texture in chunks of `chunk` tasks (from
 * {@linkcode chunkTasks}): operand i (`perTask` floats a task) goes to layer i and binding 5 + i;
 * `dispatch` prepares the kernel for tasks [first, first + count) with those bindings. The chunks
 * come back chained as one dispatch.
 */
export function throughStaging(
  gpu: Gpu,
  operands: readonly { tensor: Tensor; perTask: number }[],
  tasks: number,
  chunk: number,
  dispatch: (first: number, count: number, textures: StagedTextures) => Dispatch,
): Dispatch {
  const parts: Dispatch[] = [];
  for (let first = 0; first < tasks; first += chunk) {
    const count = Math.min(chunk, tasks - first);
    const textures: StagedTextures = { views: {}, copies: [] };
    operands.forEach(({ tensor, perTask }, layer) => {
      textures.copies.push(stagingCopy(gpu, tensor, { first, count, perTask }, layer));
      textures.views[5 + layer] = stagingView(gpu, layer);
    });
    parts.push(dispatch(first, count, textures));
  }
  return chained(parts);
}
