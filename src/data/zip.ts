/**
 * A small zip reader for official dataset releases (the Omniglot zips): the central directory is
 * parsed, stored and deflated members are extracted (deflate with the web
 * `DecompressionStream("deflate-raw")`), and every member's size and CRC-32 are checked.
 *
 * The whole file is held in memory (the official Omniglot zips are under 10 MB). Not supported,
 * each with a DataError that says so: ZIP64 (archives over 4 GiB or 65,535 members), archives
 * split over several disks, encrypted members, and methods other than stored (0) and deflate (8).
 * Names are decoded as UTF-8 (ASCII names, such as Omniglot's, read the same in every encoding).
 *
 * @module
 */
import { DataError } from "./split.ts";

/** One member of a zip file, as its central directory describes it. */
export interface ZipMember {
  /** Path inside the archive, "/"-separated; folders end with "/". */
  name: string;
  /** Compression method: 0 stored, 8 deflate. */
  method: number;
  /** General-purpose flags (bit 0: encrypted). */
  flags: number;
  /** CRC-32 of the uncompressed bytes. */
  crc32: number;
  /** Bytes stored in the archive. */
  compressedSize: number;
  /** Bytes once extracted. */
  size: number;
  /** Offset of the member's local header in the file. */
  offset: number;
}

const EOCD = 0x06054b50;
const EOCD_SIZE = 22;
const CENTRAL = 0x02014b50;
const CENTRAL_SIZE = 46;
const LOCAL = 0x04034b50;
const LOCAL_SIZE = 30;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309, the polynomial of zip, gzip and PNG) of `bytes`, as an unsigned number. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A zip file held in memory: its members from the central directory, and {@link ZipArchive.read}
 * to extract one. Every problem is a one-line DataError naming the file.
 */
export class ZipArchive {
  /** The file's path, named in errors. */
  readonly path: string;
  /** Members in central-directory order. */
  readonly members: readonly ZipMember[];
  #bytes: Uint8Array;
  #view: DataView;

  /** Parses the central directory of `bytes`, read from `path`. */
  constructor(bytes: Uint8Array, path: string) {
    this.path = path;
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.members = this.#centralDirectory();
  }

  /** Reads the zip file at `path` into memory and parses its central directory. */
  static async open(path: string): Promise<ZipArchive> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (error) {
      throw new DataError(`${path}: cannot be read (${(error as Error).message})`);
    }
    return new ZipArchive(bytes, path);
  }

  /** The extracted bytes of `member`, checked against its recorded size and CRC-32. */
  async read(member: ZipMember): Promise<Uint8Array> {
    const at = member.offset;
    if (at + LOCAL_SIZE > this.#bytes.length || this.#view.getUint32(at, true) !== LOCAL) {
      throw this.#corrupt(`no local header for member '${member.name}'`);
    }
    const start = at + LOCAL_SIZE + this.#view.getUint16(at + 26, true) +
      this.#view.getUint16(at + 28, true);
    const end = start + member.compressedSize;
    if (end > this.#bytes.length) throw this.#corrupt(`member '${member.name}' is cut off`);
    if (member.flags & 1) {
      throw new DataError(
        `${this.path}: member '${member.name}' is encrypted; expected an unencrypted zip ` +
          `(extract it with the password and use the folder)`,
      );
    }
    const stored = this.#bytes.subarray(start, end);
    let data: Uint8Array;
    if (member.method === 0) {
      data = stored;
    } else if (member.method === 8) {
      try {
        data = await inflateRaw(stored);
      } catch (error) {
        throw this.#corrupt(
          `member '${member.name}' does not inflate: ${(error as Error).message}`,
        );
      }
    } else {
      throw new DataError(
        `${this.path}: member '${member.name}' uses compression method ${member.method}; ` +
          `expected stored (0) or deflate (8): extract the archive and use the folder`,
      );
    }
    if (data.length !== member.size) {
      throw this.#corrupt(
        `member '${member.name}' has ${data.length} bytes, expected ${member.size}`,
      );
    }
    if (crc32(data) !== member.crc32) throw this.#corrupt(`member '${member.name}' fails CRC-32`);
    return data;
  }

  #corrupt(why: string): DataError {
    return new DataError(`${this.path}: corrupt zip (${why}); get the file again`);
  }

  #centralDirectory(): ZipMember[] {
    const bytes = this.#bytes;
    const view = this.#view;
    let eocd = -1;
    const lowest = Math.max(0, bytes.length - EOCD_SIZE - 0xffff);
    for (let at = bytes.length - EOCD_SIZE; at >= lowest; at--) {
      if (view.getUint32(at, true) === EOCD) {
        eocd = at;
        break;
      }
    }
    if (eocd < 0) {
      throw new DataError(
        `${this.path}: not a zip file or truncated (no end-of-central-directory record); ` +
          `get the file again`,
      );
    }
    const disk = view.getUint16(eocd + 4, true);
    const directoryDisk = view.getUint16(eocd + 6, true);
    const count = view.getUint16(eocd + 10, true);
    const size = view.getUint32(eocd + 12, true);
    const offset = view.getUint32(eocd + 16, true);
    if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
      throw new DataError(
        `${this.path}: a ZIP64 archive, which this reader does not support; extract it and ` +
          `use the folder`,
      );
    }
    if (disk !== 0 || directoryDisk !== 0) {
      throw new DataError(
        `${this.path}: part of a multi-disk zip; join the parts or extract them and use the folder`,
      );
    }
    if (offset + size > eocd) throw this.#corrupt("central directory lies outside the file");
    const decoder = new TextDecoder();
    const members: ZipMember[] = [];
    let at = offset;
    for (let i = 0; i < count; i++) {
      if (at + CENTRAL_SIZE > offset + size || view.getUint32(at, true) !== CENTRAL) {
        throw this.#corrupt(`central directory entry ${i} of ${count} is damaged`);
      }
      const nameLength = view.getUint16(at + 28, true);
      const next = at + CENTRAL_SIZE + nameLength + view.getUint16(at + 30, true) +
        view.getUint16(at + 32, true);
      if (next > offset + size) {
        throw this.#corrupt(`central directory entry ${i} of ${count} is damaged`);
      }
      members.push({
        name: decoder.decode(bytes.subarray(at + CENTRAL_SIZE, at + CENTRAL_SIZE + nameLength)),
        flags: view.getUint16(at + 8, true),
        method: view.getUint16(at + 10, true),
        crc32: view.getUint32(at + 16, true),
        compressedSize: view.getUint32(at + 20, true),
        size: view.getUint32(at + 24, true),
        offset: view.getUint32(at + 42, true),
      });
      at = next;
    }
    return members;
  }
}

/** Inflates raw deflate data (no zlib or gzip wrapper). */
async function inflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
