/**
 * The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and byte range, then the raw little-endian data. Only F32 and
 * U32 are written; files are written atomically (temporary file, then rename).
 *
 * @module
 */

/** A named tensor on the CPU. */
export interface NamedTensor {
  /** Shape, outermost first. */
  shape: number[];
  /** Values, row-major. */
  data: Float32Array | Uint32Array;
}

/** A file that is not valid safetensors, or holds something we did not expect. */
export class SafetensorsError extends Error {
  /** Names the file and the problem. */
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = "SafetensorsError";
  }
}

/** Serialises named tensors (in insertion order) and string metadata. */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, NamedTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new RangeError(`Tensor '${name}' has shape [${t.shape}] but ${t.data.length} values`);
    }
    const bytes = t.data.byteLength;
    header[name] = {
      dtype: t.data instanceof Uint32Array ? "U32" : "F32",
      shape: t.shape,
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/** Parses safetensors bytes; `path` only names the source in errors. */
export function decodeSafetensors(
  bytes: Uint8Array,
  path = "safetensors data",
): { tensors: Map<string, NamedTensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) throw new SafetensorsError(path, "file is shorter than its 8-byte header");
  const headerLength = Number(
    new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true),
  );
  if (8 + headerLength > bytes.length) {
    throw new SafetensorsError(
      path,
      `header says ${headerLength} bytes but the file has ${
        bytes.length - 8
      }; the file is truncated`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  } catch {
    throw new SafetensorsError(path, "header is not valid JSON; the file is corrupt");
  }
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, NamedTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: range } = entry as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    if (dtype !== "F32" && dtype !== "U32") {
      throw new SafetensorsError(path, `tensor '${name}' has dtype ${dtype}; expected F32 or U32`);
    }
    const [begin, end] = range;
    const count = shape.reduce((a, b) => a * b, 1);
    if (end - begin !== count * 4 || dataStart + end > bytes.length) {
      throw new SafetensorsError(
        path,
        `tensor '${name}' [${shape}] does not fit its byte range; the file is truncated or corrupt`,
      );
    }
    const copy = bytes.slice(dataStart + begin, dataStart + end);
    tensors.set(name, {
      shape,
      data: dtype === "U32" ? new Uint32Array(copy.buffer) : new Float32Array(copy.buffer),
    });
  }
  return { tensors, metadata };
}

/** Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename. */
export async function writeAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  if (typeof bytes === "string") await Deno.writeTextFile(tmp, bytes);
  else await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, path);
}

/** Writes named tensors to a safetensors file atomically. */
export async function saveSafetensors(
  path: string,
  tensors: ReadonlyMap<string, NamedTensor>,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeAtomic(path, encodeSafetensors(tensors, metadata));
}

/** Reads a safetensors file; a missing or corrupt file raises an error naming it. */
export async function loadSafetensors(
  path: string,
): Promise<{ tensors: Map<string, NamedTensor>; metadata: Record<string, string> }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new SafetensorsError(path, "file not found");
    throw e;
  }
  return decodeSafetensors(bytes, path);
}
