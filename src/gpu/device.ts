/**
 * The WebGPU adapter and device, acquired once per process with the limits the kernels need.
 *
 * @module
 */

/** Raised when no WebGPU adapter or device can be had; the message says what to install. */
export class GpuUnavailableError extends Error {
  /** Builds the error from the reason WebGPU gave (or a description of what was missing). */
  constructor(reason: string) {
    super(
      `WebGPU is not available (${reason}): on Linux it needs a Vulkan or OpenGL driver, ` +
        `e.g. Mesa's 'apt-get install -y mesa-vulkan-drivers libvulkan1'`,
    );
    this.name = "GpuUnavailableError";
  }
}

/** The device with what we know of its adapter. */
export interface Gpu {
  /** The WebGPU device every buffer and pipeline belongs to. */
  readonly device: GPUDevice;
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or an NVIDIA card's name. */
  readonly description: string;
  /** True for software adapters (Mesa's llvmpipe). */
  readonly isFallback: boolean;
  /** The limits granted to the device. */
  readonly limits: GPUSupportedLimits;
  /** Optional features granted to the device (e.g. "timestamp-query", "subgroups"). */
  readonly features: ReadonlySet<string>;
  /**
   * What identifies the adapter and its driver stack for cached kernel choices: vendor,
   * architecture, device, description and the runtime's WebGPU implementation version.
   */
  readonly adapterKey: string;
  /**
   * Bytes of the buffers (and of the textures kernels read buffers through) this device holds,
   * now and at most since the last `resetPeak`.
   */
  readonly memory: MemoryMeter;
}

/**
 * Counts the bytes of GPU buffers created and not yet destroyed, and of the staging textures of
 * src/gpu/texture.ts (WebGPU has no query of its own for memory in use): `live` now, `peak` the
 * most at once since `resetPeak`.
 */
export class MemoryMeter {
  #live = 0;
  #peak = 0;

  /** Bytes of buffers alive now. */
  get live(): number {
    return this.#live;
  }

  /** The most bytes alive at once since the last `resetPeak` (or since the device was made). */
  get peak(): number {
    return this.#peak;
  }

  /** Starts a new peak from the bytes alive now. */
  resetPeak(): void {
    this.#peak = this.#live;
  }

  /** Counts `resource` (a buffer, or a texture of `size` bytes) until its first `destroy`. */
  track(resource: GPUBuffer | GPUTexture, size = (resource as GPUBuffer).size): void {
    this.#live += size;
    this.#peak = Math.max(this.#peak, this.#live);
    const destroy = resource.destroy.bind(resource);
    let alive = true;
    resource.destroy = () => {
      if (alive) this.#live -= size;
      alive = false;
      destroy();
    };
  }
}

let shared: Promise<Gpu> | undefined;

/** Returns the process-wide GPU, acquiring it on first use. */
export function getGpu(): Promise<Gpu> {
  shared ??= acquire();
  return shared;
}

/**
 * Mesa's drivers print "XDG_RUNTIME_DIR is invalid or not set" on every start when the variable
 * is unset (common in containers and CI); point it at a private folder before the driver loads.
 * The folder is made for this process (mode 0700, so no other user's socket can be in it) and
 * removed at exit. Needs only env and write permission (no uid lookup).
 */
function quietDriverWarning(): void {
  if (Deno.build.os !== "linux") return;
  try {
    if (Deno.env.get("XDG_RUNTIME_DIR")) return;
    const dir = Deno.makeTempDirSync({ prefix: "supernet-runtime-" });
    Deno.chmodSync(dir, 0o700);
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Already gone or not removable: a leftover empty folder in the temp dir is harmless.
      }
    });
  } catch {
    // Without env or write permission the warning stays; nothing else depends on it.
  }
}

async function acquire(): Promise<Gpu> {
  quietDriverWarning();
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new GpuUnavailableError("navigator.gpu is missing in this runtime");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new GpuUnavailableError("no adapter was found");
  const wanted = adapter.limits;
  // Timestamps make the kernel tuner's timings exact where offered; subgroups are recorded for it.
  const optional = (["timestamp-query", "subgroups"] as GPUFeatureName[]).filter((f) =>
    adapter.features.has(f)
  );
  const device = await adapter.requestDevice({
    requiredFeatures: optional,
    requiredLimits: {
      maxStorageBufferBindingSize: wanted.maxStorageBufferBindingSize,
      maxBufferSize: wanted.maxBufferSize,
      maxStorageBuffersPerShaderStage: wanted.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: wanted.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: wanted.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: wanted.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: wanted.maxComputeWorkgroupSizeY,
    },
  });
  device.addEventListener("uncapturederror", (event) => {
    // A validation error is a bug in our own dispatch code; failing loudly beats wrong numbers.
    throw new Error(`WebGPU error: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
  const memory = new MemoryMeter();
  const createBuffer = device.createBuffer.bind(device);
  device.createBuffer = (descriptor: GPUBufferDescriptor) => {
    const buffer = createBuffer(descriptor);
    memory.track(buffer);
    return buffer;
  };
  const info = adapter.info;
  return {
    device,
    description: info.description || info.vendor || "unknown adapter",
    isFallback: info.isFallbackAdapter ?? false,
    limits: device.limits,
    features: new Set([...device.features]),
    adapterKey: [
      info.vendor,
      info.architecture,
      info.device,
      info.description,
      `deno ${Deno.version.deno}`,
    ]
      .filter(Boolean).join(" | "),
    memory,
  };
}
