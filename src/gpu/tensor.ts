/**
 * Tensors: a shaped, row-major region of a GPU buffer, plus arenas that hold many of them.
 *
 * @module
 */
import type { Gpu } from "./device.ts";

/** Element type of a tensor; both take 4 bytes. */
export type DType = "f32" | "u32";

/** Usage of every storage buffer we create: kernels read and write it, and it can be copied. */
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A row-major view of `numel(shape)` elements of a buffer, starting at `byteOffset`.
 * Views made by `reshape` share the buffer; only the tensor that created the buffer destroys it.
 */
export class Tensor {
  /** The buffer this tensor lives in. */
  readonly buffer: GPUBuffer;
  /** Offset of element 0 in bytes; a multiple of the device's storage offset alignment. */
  readonly byteOffset: number;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  #owner: boolean;

  /** Wraps a region of a buffer; `owner` tensors destroy the buffer in `destroy()`. */
  constructor(
    buffer: GPUBuffer,
    shape: readonly number[],
    options: { byteOffset?: number; dtype?: DType; owner?: boolean } = {},
  ) {
    this.buffer = buffer;
    this.shape = [...shape];
    this.byteOffset = options.byteOffset ?? 0;
    this.dtype = options.dtype ?? "f32";
    this.#owner = options.owner ?? false;
    if (this.byteOffset + this.byteLength > buffer.size) {
      throw new RangeError(
        `Tensor of shape [${shape}] at byte ${this.byteOffset} does not fit a buffer of ${buffer.size} bytes`,
      );
    }
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Length in bytes. */
  get byteLength(): number {
    return this.size * 4;
  }

  /** The binding of this region for a bind group (never empty: WebGPU rejects size 0). */
  get binding(): GPUBufferBinding {
    return { buffer: this.buffer, offset: this.byteOffset, size: Math.max(4, this.byteLength) };
  }

  /** A view with another shape of the same number of elements; no copy. */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new RangeError(`Cannot reshape [${this.shape}] (${this.size} elements) to [${shape}]`);
    }
    return new Tensor(this.buffer, shape, { byteOffset: this.byteOffset, dtype: this.dtype });
  }

  /** Destroys the buffer if this tensor created it. */
  destroy(): void {
    if (this.#owner) this.buffer.destroy();
    this.#owner = false;
  }
}

/** Creates a zero-filled tensor with its own buffer. */
export function createTensor(gpu: Gpu, shape: readonly number[], dtype: DType = "f32"): Tensor {
  const buffer = gpu.device.createBuffer({
    size: Math.max(16, Math.ceil((numel(shape) * 4) / 16) * 16),
    usage: STORAGE_USAGE,
  });
  return new Tensor(buffer, shape, { dtype, owner: true });
}

/** Creates a tensor holding `data` (Float32Array for f32, Uint32Array for u32). */
export function tensorFrom(
  gpu: Gpu,
  shape: readonly number[],
  data: Float32Array | Uint32Array | readonly number[],
): Tensor {
  const dtype: DType = data instanceof Uint32Array ? "u32" : "f32";
  const t = createTensor(gpu, shape, dtype);
  write(gpu, t, data);
  return t;
}

/** Overwrites a tensor's contents from the CPU. */
export function write(
  gpu: Gpu,
  t: Tensor,
  data: Float32Array | Uint32Array | readonly number[],
): void {
  if (data.length !== t.size) {
    throw new RangeError(`Expected ${t.size} values for shape [${t.shape}], got ${data.length}`);
  }
  const typed = data instanceof Float32Array || data instanceof Uint32Array
    ? data
    : t.dtype === "u32"
    ? new Uint32Array(data)
    : new Float32Array(data);
  if (t.size === 0) return;
  gpu.device.queue.writeBuffer(t.buffer, t.byteOffset, typed as Float32Array<ArrayBuffer>);
}

/** Copies a tensor back to the CPU as f32 (after all submitted work has finished). */
export async function read(gpu: Gpu, t: Tensor): Promise<Float32Array> {
  return new Float32Array(await readBytes(gpu, t));
}

/** Copies a u32 tensor back to the CPU. */
export async function readU32(gpu: Gpu, t: Tensor): Promise<Uint32Array> {
  return new Uint32Array(await readBytes(gpu, t));
}

async function readBytes(gpu: Gpu, t: Tensor): Promise<ArrayBuffer> {
  return (await readMany(gpu, [t]))[0]!.buffer as ArrayBuffer;
}

/** Copies several f32 tensors back with one staging buffer and one wait. */
export async function readMany(gpu: Gpu, tensors: readonly Tensor[]): Promise<Float32Array[]> {
  const total = tensors.reduce((n, t) => n + t.byteLength, 0);
  const staging = gpu.device.createBuffer({
    size: Math.max(4, total),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = gpu.device.createCommandEncoder();
  let at = 0;
  for (const t of tensors) {
    if (t.byteLength > 0) {
      encoder.copyBufferToBuffer(t.buffer, t.byteOffset, staging, at, t.byteLength);
    }
    at += t.byteLength;
  }
  gpu.device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const bytes = staging.getMappedRange();
  at = 0;
  const out = tensors.map((t) => {
    const copy = new Float32Array(bytes.slice(at, at + t.byteLength));
    at += t.byteLength;
    return copy;
  });
  staging.unmap();
  staging.destroy();
  return out;
}

/**
 * One buffer holding many tensors, each at an offset aligned for binding. Parameters of a model
 * live in one arena and their gradients in a twin arena of the same layout, so an optimiser or a
 * global-norm reduction is one dispatch over the whole flat buffer.
 */
export class Arena {
  /** The tensors in allocation order, by name. */
  readonly entries: { name: string; tensor: Tensor }[] = [];
  #layout: { name: string; shape: readonly number[]; offset: number }[] = [];
  #buffer: GPUBuffer | undefined;
  #length = 0;
  readonly #align: number;

  /** An empty arena; tensors are declared with `add`, then `allocate` creates the buffer. */
  constructor(readonly gpu: Gpu) {
    // Offsets are in elements; 256 bytes satisfies every adapter's storage offset alignment.
    this.#align = Math.max(64, gpu.limits.minStorageBufferOffsetAlignment / 4);
  }

  /** Declares a tensor; returns its element offset in the flat buffer. */
  add(name: string, shape: readonly number[]): number {
    if (this.#buffer) throw new Error(`Arena is already allocated; cannot add '${name}'`);
    const offset = Math.ceil(this.#length / this.#align) * this.#align;
    this.#layout.push({ name, shape, offset });
    this.#length = offset + numel(shape);
    return offset;
  }

  /** Creates the buffer (zero-filled) and the tensor views. */
  allocate(): this {
    const size = Math.max(16, Math.ceil((this.#length * 4) / 16) * 16);
    this.#buffer = this.gpu.device.createBuffer({ size, usage: STORAGE_USAGE });
    for (const { name, shape, offset } of this.#layout) {
      this.entries.push({
        name,
        tensor: new Tensor(this.#buffer, shape, { byteOffset: offset * 4 }),
      });
    }
    return this;
  }

  /** The whole arena as one flat tensor (padding between tensors included, kept at zero). */
  get flat(): Tensor {
    if (!this.#buffer) throw new Error("Arena is not allocated yet");
    return new Tensor(this.#buffer, [this.#length]);
  }

  /** The tensor declared under `name`. */
  get(name: string): Tensor {
    const entry = this.entries.find((e) => e.name === name);
    if (!entry) throw new Error(`No tensor named '${name}' in this arena`);
    return entry.tensor;
  }

  /** A twin arena with the same layout (for gradients or optimiser state). */
  twin(): Arena {
    const other = new Arena(this.gpu);
    for (const { name, shape } of this.#layout) other.add(name, shape);
    return other.allocate();
  }

  /** Destroys the buffer. */
  destroy(): void {
    this.#buffer?.destroy();
    this.#buffer = undefined;
  }
}
