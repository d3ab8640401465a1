/**
 * The local backend: runs cells on this machine, at most `parallel` at once, each as its own
 * process (`deno task sweep PLAN --out DIR --cell I`) with stdout and stderr in
 * `<sweep>/logs/<cell>.log`. SIGINT and SIGTERM are passed on to the running cells, which record
 * the stop; no new cell starts after one.
 *
 * @module
 */
import { dirname } from "node:path";
import {
  type Backend,
  cellArgs,
  type Launch,
  localLog,
  PROJECT_ROOT,
  type SweepEvent,
  type SweepTarget,
} from "./backend.ts";
import type { Cell } from "./plan.ts";

/** Options of the local backend. */
export interface LocalOptions {
  /** Cells at once. */
  parallel: number;
  /** Rerun cells that are done. */
  force: boolean;
  /** The deno executable (default: this one). */
  deno?: string;
}

/** Environment variable that tells a cell where its log is, so its error record can name it. */
export const LOG_ENV = "SUPERNET_SWEEP_LOG";

/** The local backend. */
export function localBackend(options: LocalOptions): Backend {
  return {
    launch: (sweep, cells, hooks) => runLocal(sweep, cells, { ...options, ...hooks }),
  };
}

async function runLocal(
  sweep: SweepTarget,
  cells: Cell[],
  options: LocalOptions & { onEvent?: (e: SweepEvent) => void; signal?: AbortSignal },
): Promise<Launch> {
  if (!Number.isInteger(options.parallel) || options.parallel < 1) {
    throw new RangeError(`--parallel ${options.parallel} must be a positive integer`);
  }
  const queue = [...cells];
  const running = new Set<Deno.ChildProcess>();
  let stopping: Deno.Signal | undefined;
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => {
      stopping = signal;
      for (const child of running) {
        try {
          child.kill(signal);
        } catch {
          // Already ended.
        }
      }
    };
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  const worker = async () => {
    while (queue.length > 0 && !stopping && !options.signal?.aborted) {
      const cell = queue.shift()!;
      const log = localLog(sweep, cell);
      await Deno.mkdir(dirname(log), { recursive: true });
      const file = await Deno.open(log, { create: true, write: true, truncate: true });
      options.onEvent?.({ kind: "start", cell, log });
      let code: number;
      try {
        const child = new Deno.Command(options.deno ?? Deno.execPath(), {
          args: cellArgs(sweep, { force: options.force, index: cell.index }),
          cwd: PROJECT_ROOT,
          env: { [LOG_ENV]: log },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        running.add(child);
        const abort = () => child.kill("SIGTERM");
        options.signal?.addEventListener("abort", abort);
        // Both streams go to one file, chunk by chunk, in the order they arrive.
        let writes = Promise.resolve();
        const pump = async (stream: ReadableStream<Uint8Array>) => {
          for await (const chunk of stream) {
            writes = writes.then(async () => {
              let done = 0;
              while (done < chunk.length) done += await file.write(chunk.subarray(done));
            });
          }
        };
        await Promise.all([pump(child.stdout), pump(child.stderr)]);
        code = (await child.status).code;
        await writes;
        options.signal?.removeEventListener("abort", abort);
        running.delete(child);
      } finally {
        file.close();
      }
      options.onEvent?.({ kind: "end", cell, code, log });
    }
  };
  try {
    await Promise.all(
      Array.from({ length: Math.min(options.parallel, cells.length) }, worker),
    );
  } finally {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  }
  return { ended: true };
}
