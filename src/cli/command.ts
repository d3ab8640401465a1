/**
 * What every command of the command line shares: the {@linkcode Command} each command file
 * exports for `main.ts` to dispatch, the flag groups several commands take, the progress line,
 * and the checks of output folders (with the clean-up of those a failed command created).
 *
 * @module
 */
import { DATASETS } from "../data/dataset.ts";
import { FAMILIES } from "../data/tasks.ts";
import type { Gpu } from "../gpu/device.ts";
import { FITS, type SkippedImage } from "../images.ts";
import { PREDICT_DEFAULTS } from "../predict.ts";
import { type CommandHelp, type Flag, UsageError } from "./flags.ts";

/** A subcommand: its help, and the function that runs it with the parsed flag values. */
export interface Command extends CommandHelp {
  /** Whether the positional argument repeats. */
  many?: boolean;
  /** Whether the command checks for its positional argument itself. */
  optional?: boolean;
  /**
   * Runs the command: `gpu` opens the device (commands that need none never call it), `options`
   * holds the flag values by key, `quiet` is `--quiet`, `positionals` the other arguments.
   */
  run(
    gpu: () => Promise<Gpu>,
    options: Record<string, unknown>,
    quiet: boolean,
    positionals: string[],
  ): Promise<void>;
}

/** How pictures a user brings are read (`adapt --images`, `predict`). */
export const PICTURE_FLAGS: Flag[] = [
  {
    flag: "fit",
    key: "fit",
    kind: "string",
    values: FITS,
    help: "centre-crop to the input's shape, or stretch",
    default: PREDICT_DEFAULTS.fit,
  },
  { flag: "strict", key: "strict", kind: "bool", help: "stop at the first bad picture" },
];

/** Where dataset files are found and whether they are checked. */
export const DATA_FLAGS: Flag[] = [
  { flag: "data-dir", key: "dataDir", kind: "string", help: "folder of dataset files" },
  { flag: "no-verify", key: "verify", kind: "bool", help: "use files whose md5 differs" },
];

/** The dataset, its task family and the held-out tasks (`train`, `tasks`). */
export const TASK_FLAGS: Flag[] = [
  { flag: "dataset", key: "dataset", kind: "string", values: DATASETS, help: "dataset" },
  ...DATA_FLAGS,
  {
    flag: "download",
    key: "download",
    kind: "bool",
    help: "fetch the official archive if missing",
  },
  { flag: "family", key: "family", kind: "string", values: FAMILIES, help: "task family" },
  { flag: "holdout", key: "holdout", kind: "ints", help: "task indices held out (comma list)" },
  { flag: "holdout-last", key: "holdoutLast", kind: "int", help: "hold out the last K tasks" },
];

/** A progress printer: one rewritten line on a terminal, plain lines otherwise. */
export function progress(quiet: boolean): { line(text: string): void; done(): void } {
  const tty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  let open = false;
  return {
    line(text: string) {
      if (quiet) return;
      if (tty) {
        Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text}`));
        open = true;
      } else console.error(text);
    },
    done() {
      if (open) Deno.stderr.writeSync(encoder.encode("\n"));
      open = false;
    },
  };
}

/** Seconds as m:ss for progress lines; "?" when not finite. */
export function minutes(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  // Round once, then split: 59.6 s is 1:00, not 0:60.
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

/** Prints the adapter a command runs on, unless `quiet`. */
export function printAdapter(gpu: Gpu, quiet: boolean): void {
  if (!quiet) console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
}

/** Prints one warning line per skipped picture. */
export function warnSkipped(s: SkippedImage): void {
  console.error(`warning: skipped ${s.file}: ${s.reason}`);
}

/** Shows a command line argument as a shell would need it, for messages. */
export function shown(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** A place the command cannot write to: one line, exit code 1. */
export class OutputError extends Error {}

/** Output folders this command created, removed again (when still empty) if it fails. */
const created: string[] = [];

/**
 * Makes sure an output folder can be written before any work starts: a file there is a usage
 * error (it is never replaced), and a folder that cannot be created is named with the reason.
 */
export async function outputFolder(flag: string, path: string): Promise<void> {
  const info = await Deno.stat(path).catch(() => undefined);
  if (info && !info.isDirectory) {
    throw new UsageError(
      `--${flag} ${path} is a file; expected a folder (the file is left as it is): choose another --${flag}`,
    );
  }
  if (info) return;
  try {
    await Deno.mkdir(path, { recursive: true });
    created.push(path);
  } catch (e) {
    const why = e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "permission denied"
      : e instanceof Deno.errors.NotADirectory || e instanceof Deno.errors.AlreadyExists
      ? "part of the path is a file"
      : (e as Error).message;
    throw new OutputError(
      `cannot create --${flag} ${path} (${why}); choose a folder you can write to`,
    );
  }
}

/** After a failure: removes the output folders {@linkcode outputFolder} created, if still empty. */
export async function removeCreatedFolders(): Promise<void> {
  for (const dir of created) await Deno.remove(dir).catch(() => {});
}
