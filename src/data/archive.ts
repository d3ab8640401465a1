/**
 * Files of official dataset releases: md5 checks, a streaming reader for the members of a
 * .tar.gz archive (ustar, with GNU long names and pax paths), and an atomic, verified download.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename, dirname } from "node:path";
import { DataError } from "./split.ts";

/** The published size and md5 of an official file. */
export interface Checksum {
  /** Size in bytes, when published. */
  size?: number;
  /** Lower-case hex md5. */
  md5: string;
}

/** Hex md5 of bytes in memory. */
export function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Hex md5 of a file, read as a stream. */
export async function md5File(path: string): Promise<string> {
  const hash = createHash("md5");
  const file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/**
 * Throws a DataError unless `bytes` (read from `path`) have the expected size and md5; the
 * message names the file and says how to accept it anyway.
 */
export function verifyBytes(
  bytes: Uint8Array,
  options: { path: string; expected: Checksum },
): void {
  checkSize(bytes.length, options);
  const actual = md5(bytes);
  if (actual !== options.expected.md5) mismatch("md5", actual, options);
}

/** Like {@link verifyBytes} for a file on disk, streamed so it is never held in memory. */
export async function verifyFile(path: string, expected: Checksum): Promise<void> {
  checkSize((await Deno.stat(path)).size, { path, expected });
  const actual = await md5File(path);
  if (actual !== expected.md5) mismatch("md5", actual, { path, expected });
}

function checkSize(size: number, options: { path: string; expected: Checksum }): void {
  const want = options.expected.size;
  if (want !== undefined && size !== want) mismatch("size", `${size} bytes`, options);
}

function mismatch(
  what: string,
  actual: string,
  options: { path: string; expected: Checksum },
): never {
  const { path, expected } = options;
  const want = what === "size" ? `${expected.size} bytes` : expected.md5;
  throw new DataError(
    `${path}: ${what} is ${actual}, expected ${want} (the official release); ` +
      `pass --no-verify to use it anyway`,
  );
}

/** Reads a byte stream in exact amounts; stream errors (e.g. bad gzip) become DataErrors. */
class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #pos = 0;

  constructor(stream: ReadableStream<Uint8Array>, readonly path: string) {
    this.#reader = stream.getReader();
  }

  /** Reads up to `n` bytes into `target` (or skips them); returns how many there were. */
  async read(n: number, target?: Uint8Array): Promise<number> {
    let got = 0;
    while (got < n) {
      if (this.#pos >= this.#chunk.length) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await this.#reader.read();
        } catch (error) {
          throw new DataError(
            `${this.path}: truncated or not a gzip file (${(error as Error).message}); ` +
              `get the official archive again`,
          );
        }
        if (next.done) break;
        this.#chunk = next.value;
        this.#pos = 0;
        continue;
      }
      const k = Math.min(n - got, this.#chunk.length - this.#pos);
      target?.set(this.#chunk.subarray(this.#pos, this.#pos + k), got);
      this.#pos += k;
      got += k;
    }
    return got;
  }

  /** Stops reading and releases the file (a stream that already failed has nothing to stop). */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => undefined);
  }
}

const BLOCK = 512;

function text(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

function headerNumber(header: Uint8Array, offset: number, length: number): number {
  const field = header.subarray(offset, offset + length);
  if (field[0]! & 0x80) {
    // GNU base-256: big-endian binary after the marker bit.
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const digits = text(field).trim();
  return digits === "" ? 0 : parseInt(digits, 8);
}

function headerIsValid(header: Uint8Array): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
  return headerNumber(header, 148, 8) === sum;
}

function paxPath(records: Uint8Array): string | undefined {
  // Records are "<length> <key>=<value>\n".
  const lines = new TextDecoder().decode(records).split("\n");
  for (const line of lines) {
    const match = /^\d+ path=(.*)$/.exec(line);
    if (match) return match[1];
  }
  return undefined;
}

/**
 * Reads the members named in `wanted` (paths inside the archive, e.g.
 * "cifar-100-binary/train.bin") from a .tar.gz file, streaming it so that only those members
 * are held in memory. Throws a DataError naming the file when it is truncated, not a tar.gz, or
 * lacks a wanted member.
 */
export async function readTarGz(
  path: string,
  wanted: readonly string[],
): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  const want = new Set(wanted);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    throw new DataError(`${path}: cannot be opened (${(error as Error).message})`);
  }
  const reader = new ByteReader(
    file.readable.pipeThrough(new DecompressionStream("gzip")),
    path,
  );
  const truncated = (member: string) =>
    new DataError(
      `${path}: archive ends inside member '${member}' (truncated); get the official archive again`,
    );
  const header = new Uint8Array(BLOCK);
  let longName: string | undefined;
  let sawEnd = false;
  try {
    while (found.size < want.size) {
      const got = await reader.read(BLOCK, header);
      if (got === 0) break;
      if (got < BLOCK) throw truncated("(header)");
      if (header.every((b) => b === 0)) {
        sawEnd = true;
        break;
      }
      if (!headerIsValid(header)) {
        throw new DataError(`${path}: not a tar archive (bad header checksum); expected a .tar.gz`);
      }
      const size = headerNumber(header, 124, 12);
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      const type = String.fromCharCode(header[156]!);
      const prefix = text(header.subarray(345, 500));
      const plain = text(header.subarray(0, 100));
      const name = (longName ?? (prefix ? `${prefix}/${plain}` : plain)).replace(/^\.\//, "");
      if (type === "L" || type === "x") {
        const data = new Uint8Array(size);
        if (await reader.read(size, data) < size) throw truncated(name);
        if (await reader.read(padded - size) < padded - size) throw truncated(name);
        longName = type === "L" ? text(data) : paxPath(data) ?? longName;
        continue;
      }
      longName = undefined;
      const isFile = type === "0" || type === "\0" || type === "7";
      if (isFile && want.has(name) && !found.has(name)) {
        const data = new Uint8Array(size);
        if (await reader.read(size, data) < size) throw truncated(name);
        found.set(name, data);
        if (await reader.read(padded - size) < padded - size && found.size < want.size) {
          throw truncated(name);
        }
      } else if (await reader.read(padded) < padded) {
        throw truncated(name);
      }
    }
  } finally {
    await reader.cancel();
  }
  const missing = wanted.filter((w) => !found.has(w));
  if (missing.length > 0) {
    throw new DataError(
      `${path}: has no member ${missing.map((m) => `'${m}'`).join(", ")}` +
        (sawEnd ? "" : " (the archive may be truncated)") + "; expected the official archive",
    );
  }
  return found;
}

/**
 * Downloads `url` to `dest`: streams it into a temporary file beside `dest`, checks size and md5
 * against `checksum` (if given), and only then renames it into place, so `dest` is either absent
 * or complete and verified. An existing `dest` is never overwritten. `fetch` may be injected
 * (tests use a local one; `file://` URLs also work with the built-in fetch).
 */
export async function download(
  url: string,
  dest: string,
  options: { checksum?: Checksum; fetch?: typeof fetch } = {},
): Promise<void> {
  const dir = dirname(dest);
  const doFetch = options.fetch ?? fetch;
  const failed = (why: string) =>
    new DataError(
      `Could not download ${url} (${why}); put ${basename(dest)} into ${dir} by hand`,
    );
  await Deno.mkdir(dir, { recursive: true });
  const temp = await Deno.makeTempFile({ dir, prefix: `.${basename(dest)}.`, suffix: ".part" });
  try {
    let response: Response;
    try {
      response = await doFetch(url);
    } catch (error) {
      throw failed((error as Error).message);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw failed(`HTTP ${response.status}`);
    }
    const hash = createHash("md5");
    let size = 0;
    const file = await Deno.open(temp, { write: true, truncate: true });
    try {
      await response.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            hash.update(chunk);
            size += chunk.length;
            controller.enqueue(chunk);
          },
        }),
      ).pipeTo(file.writable);
    } catch (error) {
      throw failed((error as Error).message);
    }
    const expected = options.checksum;
    if (expected?.size !== undefined && size !== expected.size) {
      throw failed(`got ${size} bytes, expected ${expected.size}; nothing was saved`);
    }
    const actual = hash.digest("hex");
    if (expected && actual !== expected.md5) {
      throw failed(`md5 is ${actual}, expected ${expected.md5}; nothing was saved`);
    }
    try {
      await Deno.lstat(dest);
      throw failed(`${dest} appeared meanwhile and was left untouched`);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    await Deno.rename(temp, dest);
  } finally {
    await Deno.remove(temp).catch(() => undefined);
  }
}
