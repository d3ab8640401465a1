/**
 * The SuperNet command line: `train`, `adapt`, `evaluate`, `export`, `predict`, `tasks`,
 * `experiment`, `sweep`, `report`. Dispatches to the command's file under src/cli (its flags,
 * help and run), and turns errors into one line and an exit code: 0 ok, 1 failure, 2 usage error.
 *
 * @module
 */
import { CheckpointError } from "./src/checkpoint.ts";
import { type Command, OutputError, removeCreatedFolders } from "./src/cli/command.ts";
import { ADAPT_COMMAND } from "./src/cli/adapt.ts";
import { EVALUATE_COMMAND } from "./src/cli/evaluate.ts";
import { EXPERIMENT_COMMAND, FEWSHOT_COMMAND } from "./src/cli/experiment.ts";
import { EXPORT_COMMAND } from "./src/cli/export.ts";
import { type Flag, HELP_FLAG, parseFlags, usage, UsageError } from "./src/cli/flags.ts";
import { PREDICT_COMMAND } from "./src/cli/predict.ts";
import { REPORT_COMMAND } from "./src/cli/report.ts";
import { SWEEP_COMMAND } from "./src/cli/sweep.ts";
import { TASKS_COMMAND } from "./src/cli/tasks.ts";
import { TRAIN_COMMAND } from "./src/cli/train.ts";
import { DataError } from "./src/data/split.ts";
import { ExperimentError } from "./src/experiment.ts";
import { getGpu, GpuUnavailableError } from "./src/gpu/device.ts";
import { ImageError } from "./src/images.ts";
import { SafetensorsError } from "./src/safetensors.ts";
import { PlanError, SweepError } from "./src/sweep/plan.ts";
import { SlurmError } from "./src/sweep/slurm.ts";
import { NonFiniteLossError } from "./src/train.ts";

/** Flags every command takes. */
const COMMON: Flag[] = [
  { flag: "config", key: "config", kind: "string", help: "JSON file of options" },
  { flag: "quiet", key: "quiet", kind: "bool", help: "no progress line" },
  HELP_FLAG,
];

/** The commands, in the order the usage lists them; `experiment fewshot` is FEWSHOT_COMMAND. */
const COMMANDS: Record<string, Command> = {
  train: TRAIN_COMMAND,
  adapt: ADAPT_COMMAND,
  evaluate: EVALUATE_COMMAND,
  export: EXPORT_COMMAND,
  predict: PREDICT_COMMAND,
  tasks: TASKS_COMMAND,
  experiment: EXPERIMENT_COMMAND,
  sweep: SWEEP_COMMAND,
  report: REPORT_COMMAND,
};

/** Runs the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const fewshot = args[0] === "experiment" && args[1] === "fewshot";
  const [name, ...rest] = fewshot ? ["experiment fewshot", ...args.slice(2)] : args;
  const cmd = fewshot ? FEWSHOT_COMMAND : name ? COMMANDS[name] : undefined;
  if (!cmd) {
    const list = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`);
    const text = `Usage: deno task <command> [flags]\n\nCommands:\n${list.join("\n")}`;
    if (name === undefined || name === "--help" || name === "help") {
      console.log(text);
      return name === undefined ? 2 : 0;
    }
    console.error(`error: unknown command '${name}'\n${text}`);
    return 2;
  }
  try {
    const { values, help, quiet, positionals } = await parseFlags(rest, {
      flags: cmd.flags,
      common: COMMON,
    });
    if (help) {
      console.log(usage(name!, { ...cmd, flags: [...cmd.flags, ...COMMON] }));
      return 0;
    }
    if (positionals.length > (cmd.positional ? (cmd.many ? Infinity : 1) : 0)) {
      throw new UsageError(`unexpected argument '${positionals.at(-1)}'`);
    }
    if (cmd.positional && !cmd.optional && positionals.length === 0) {
      throw new UsageError(`missing ${cmd.positional}`);
    }
    await cmd.run(getGpu, values, quiet, positionals);
    return 0;
  } catch (e) {
    await removeCreatedFolders();
    if (e instanceof UsageError || e instanceof PlanError) {
      console.error(`error: ${e.message}\nRun 'deno task ${name} --help' for the flags.`);
      return 2;
    }
    const known = e instanceof DataError || e instanceof CheckpointError ||
      e instanceof SafetensorsError || e instanceof GpuUnavailableError ||
      e instanceof NonFiniteLossError || e instanceof RangeError || e instanceof ImageError ||
      e instanceof OutputError || e instanceof SweepError || e instanceof SlurmError ||
      e instanceof ExperimentError;
    if (known) {
      console.error(`error: ${(e as Error).message}`);
      return 1;
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotFound) {
      console.error(`error: ${(e as Error).message}`);
      return 1;
    }
    console.error(`error: ${(e as Error)?.message ?? e}`);
    if (Deno.env.get("SUPERNET_DEBUG")) console.error((e as Error)?.stack);
    else {console.error(
        "This looks like a bug; rerun with SUPERNET_DEBUG=1 for details and report it.",
      );}
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
