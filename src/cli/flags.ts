/**
 * The command line's flags, shared by the commands under src/cli and the scripts behind
 * `deno task bench`, `tune` and `gpu-run`: one {@linkcode Flag} per option, parsed into the
 * option's key and type, and the help listing each flag on one line with its default.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** A mistake in the command line: printed with the command's usage hint, exit code 2. */
export class UsageError extends Error {}

/** How a flag's value is read: one value, a comma list, or several `--flag` (strings). */
export type Kind = "string" | "int" | "number" | "bool" | "ints" | "numbers" | "strings";

/** One flag: its name on the command line, the option key, its type, and allowed values. */
export interface Flag {
  /** Name on the command line, without `--`; a `no-` bool sets its key to false. */
  flag: string;
  /** The option key its value goes into. */
  key: string;
  /** How its value is read. */
  kind: Kind;
  /** The values it accepts, where they are a fixed set. */
  values?: readonly string[];
  /** One line of help. */
  help: string;
  /** Default shown in the help where the command's defaults do not hold one for `key`. */
  default?: string | number;
  /** Refused with this message (a usage error), and hidden from the help. */
  rejected?: string;
  /** Options object the value goes into (`experiment`'s training and adaptation overrides). */
  into?: "train" | "adapt";
  /** Its key there (default: `key`). */
  field?: string;
}

/** `--help`, which every command takes. */
export const HELP_FLAG: Flag = { flag: "help", key: "help", kind: "bool", help: "this help" };

/** What a command's help shows. */
export interface CommandHelp {
  /** One line on what the command does. */
  summary: string;
  /** Its flags, in the order the help lists them. */
  flags: Flag[];
  /** The positional argument the command takes, if any. */
  positional?: string;
  /** Option defaults, shown in the help. */
  defaults?: object;
  /** A line printed before the flags. */
  note?: string;
}

/** The help of `deno task <name>`: a usage line, then one line per flag with its default. */
export function usage(name: string, cmd: CommandHelp): string {
  const what = cmd.positional ? ` ${cmd.positional}` : "";
  const lines = [`Usage: deno task ${name}${what} [flags]   (${cmd.summary})`, ""];
  if (cmd.note) lines.push(cmd.note, "");
  const defaults = (cmd.defaults ?? {}) as Record<string, unknown>;
  for (const f of cmd.flags) {
    if (f.rejected) continue;
    const value = f.kind === "bool" ? "" : f.values ? ` <${f.values.join("|")}>` : " <value>";
    const given = defaults[f.key] ?? f.default;
    const shown = f.kind === "bool" || given === undefined ||
        (Array.isArray(given) && given.length === 0)
      ? ""
      : ` (default ${Array.isArray(given) ? given.join(",") : given})`;
    const left = `  --${f.flag}${value}`;
    lines.push(`${left.length >= 44 ? `${left}  ` : left.padEnd(44)}${f.help}${shown}`);
  }
  return lines.join("\n");
}

/** The command-line name of an option key, e.g. testDir -> test-dir. */
export function flagName(key: string): string {
  return key.replaceAll(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function parseValue(f: Flag, raw: unknown): unknown {
  if (f.kind === "bool") return f.flag.startsWith("no-") ? !raw : raw;
  if (f.kind === "strings") {
    // A comma list, or the flag repeated, or both: every item checked against `values`.
    const items = (raw as string[]).flatMap((r) => String(r).split(",")).map((x) => x.trim());
    for (const item of items) {
      if (item === "" || (f.values && !f.values.includes(item))) {
        throw new UsageError(
          `--${f.flag} '${item}' is not valid; expected a comma list of ${
            f.values ? f.values.join(", ") : "non-empty names"
          }`,
        );
      }
    }
    return items;
  }
  const text = String(raw);
  if (f.values && !f.values.includes(text)) {
    throw new UsageError(
      `--${f.flag} '${text}' is not valid; expected one of ${f.values.join(", ")}`,
    );
  }
  if (f.kind === "int" || f.kind === "number") {
    const n = Number(text);
    if (!Number.isFinite(n) || (f.kind === "int" && !Number.isInteger(n)) || n < 0) {
      throw new UsageError(
        `--${f.flag} '${text}' is not a non-negative ${f.kind === "int" ? "integer" : "number"}`,
      );
    }
    return n;
  }
  if (f.kind === "ints" || f.kind === "numbers") {
    if (text === "") return [];
    const int = f.kind === "ints";
    const parts = text.split(",").map(Number);
    if (parts.some((n) => !Number.isFinite(n) || (int && !Number.isInteger(n)) || n < 0)) {
      throw new UsageError(
        `--${f.flag} '${text}' is not a comma list of non-negative ${int ? "integers" : "numbers"}`,
      );
    }
    return parts;
  }
  return text;
}

/** What {@linkcode parseFlags} read from a command line. */
export interface ParsedFlags {
  /** Option values by key: the `--config` file's first, then the flags given. */
  values: Record<string, unknown>;
  /** `--help` was given. */
  help: boolean;
  /** `--quiet` was given. */
  quiet: boolean;
  /** The arguments that are not flags. */
  positionals: string[];
}

/**
 * Parses a command line: the command's `flags` go into `values` by key (a `--config` JSON file
 * first, where `common` has that flag, then the flags given); `common` flags (`--help`,
 * `--quiet`, `--config`) are read but not put there. Mistakes are a {@linkcode UsageError}.
 */
export async function parseFlags(
  args: string[],
  spec: { flags: Flag[]; common: Flag[] },
): Promise<ParsedFlags> {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const f of [...spec.flags, ...spec.common]) {
    options[f.flag] = {
      type: f.kind === "bool" ? "boolean" : "string",
      multiple: f.kind === "strings",
    };
  }
  // "--steps -1" would read as two flags; join a negative number to its flag so that the value
  // check below names it.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.startsWith("--") ? args[i]!.slice(2) : undefined;
    const next = args[i + 1];
    if (name && options[name]?.type === "string" && next !== undefined && /^-[\d.]/.test(next)) {
      joined.push(`--${name}=${next}`);
      i++;
    } else joined.push(args[i]!);
  }
  let parsed;
  try {
    parsed = parseArgs({ args: joined, options, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]!);
  }
  const values: Record<string, unknown> = {};
  const config = parsed.values.config as string | undefined;
  if (config) Object.assign(values, await readConfig(config, spec.flags));
  for (const f of spec.flags) {
    const raw = (parsed.values as Record<string, unknown>)[f.flag];
    if (raw === undefined) continue;
    if (f.rejected) throw new UsageError(f.rejected);
    values[f.key] = parseValue(f, raw);
  }
  return {
    values,
    help: Boolean(parsed.values.help),
    quiet: Boolean(parsed.values.quiet),
    positionals: parsed.positionals,
  };
}

async function readConfig(path: string, flags: Flag[]): Promise<Record<string, unknown>> {
  let data: unknown;
  try {
    data = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "not found" : "not valid JSON";
    throw new UsageError(`--config ${path}: ${why}; expected a JSON object of options`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new UsageError(`--config ${path}: expected a JSON object of options`);
  }
  for (const [key, value] of Object.entries(data)) {
    const problem = checkOption(flags, key, value);
    if (problem) throw new UsageError(`--config ${path}: ${problem}`);
  }
  return data as Record<string, unknown>;
}

/**
 * What is wrong with a JSON option value (a config file's or a sweep plan's), or undefined;
 * rejected flags are not options.
 */
export function checkOption(flags: Flag[], key: string, value: unknown): string | undefined {
  const current = flags.filter((x) => !x.rejected);
  const f = current.find((x) => x.key === key);
  if (!f) {
    return `unknown option '${key}'; valid options: ${current.map((x) => x.key).join(", ")}`;
  }
  const nonNegative = (v: unknown, int: boolean) =>
    typeof v === "number" && Number.isFinite(v) && v >= 0 && (!int || Number.isInteger(v));
  const ok = f.kind === "bool"
    ? typeof value === "boolean"
    : f.kind === "int" || f.kind === "number"
    ? nonNegative(value, f.kind === "int")
    : f.kind === "ints" || f.kind === "numbers"
    ? Array.isArray(value) && value.every((v) => nonNegative(v, f.kind === "ints"))
    : f.kind === "strings"
    ? Array.isArray(value) && value.every((v) => typeof v === "string")
    : typeof value === "string" && (!f.values || f.values.includes(value));
  if (ok) return undefined;
  const expected = {
    bool: "true or false",
    int: "a non-negative integer",
    number: "a non-negative number",
    ints: "a list of non-negative integers",
    numbers: "a list of non-negative numbers",
    strings: "a list of strings",
    string: f.values ? `one of ${f.values.join(", ")}` : "a string",
  }[f.kind];
  return `option '${key}' is ${JSON.stringify(value)}; expected ${expected}`;
}
