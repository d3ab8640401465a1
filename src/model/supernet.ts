/**
 * The SuperNet: a generator plus a table of task vectors, whose generated weights drive T task
 * networks at once; and the plain baseline network with ordinary weights.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { Arena, type Tensor, write } from "../gpu/tensor.ts";
import { Random } from "../random.ts";
import type { Tape, Var } from "../tape.ts";
import {
  DEFAULT_GENERATOR,
  type GeneratorConfig,
  generatorForward,
  generatorParams,
  initGenerator,
} from "./generator.ts";
import {
  makeTarget,
  standardInitStd,
  targetForward,
  type TargetSpec,
  type WeightShape,
  weightShapes,
} from "./target.ts";

/** How task vectors start. */
export type ZInit = "one_hot" | "gaussian";

/** Everything that defines a SuperNet's architecture and initial values. */
export interface SuperNetConfig {
  /** Registered target name (`--target`). */
  target: string;
  /** Input [C, H, W]. */
  inputShape: [number, number, number];
  /** Logits per sample (1 for binary tasks). */
  outputs: number;
  /** Negative slope of leaky ReLU in the target network. */
  slope: number;
  /** Channels of every block of `conv4` (absent: its default, 64). */
  width?: number;
  /** Generator hyperparameters. */
  generator: GeneratorConfig;
  /** Number of task vectors in the table. */
  tasks: number;
  /** One-hot (the seed's; needs tasks <= zDim) or Gaussian N(0, 1/zDim). */
  zInit: ZInit;
  /** Seed of the initial values. */
  seed: number;
}

/** A config with the seed's defaults filled in. */
export function superNetConfig(
  partial:
    & Partial<Omit<SuperNetConfig, "generator">>
    & Pick<SuperNetConfig, "inputShape" | "tasks">
    & { generator?: Partial<GeneratorConfig> },
): SuperNetConfig {
  const generator = { ...DEFAULT_GENERATOR, ...partial.generator };
  return {
    target: "seed_cnn",
    outputs: 1,
    slope: 0.01,
    zInit: partial.tasks <= generator.zDim ? "one_hot" : "gaussian",
    seed: 1,
    ...partial,
    generator,
  };
}

/** Initial task vectors [tasks, zDim] as a flat array. */
export function initTaskVectors(
  tasks: number,
  zDim: number,
  options: { init: ZInit; seed: number },
): Float32Array {
  const z = new Float32Array(tasks * zDim);
  if (options.init === "one_hot") {
    if (tasks > zDim) {
      throw new RangeError(
        `One-hot task vectors need tasks <= z size, got ${tasks} tasks and z size ${zDim}; use gaussian`,
      );
    }
    for (let t = 0; t < tasks; t++) z[t * zDim + t] = 1;
  } else {
    const rand = new Random(options.seed ^ 0x5eed);
    for (let i = 0; i < z.length; i++) z[i] = rand.normal() / Math.sqrt(zDim);
  }
  return z;
}

/** Variables of a parameter arena on a tape: trainable (with gradients) or frozen. */
function arenaVars(tape: Tape, arena: Arena, grads: Arena | undefined): Map<string, Var> {
  const vars = new Map<string, Var>();
  for (const { name, tensor } of arena.entries) {
    vars.set(name, grads ? tape.param(tensor, grads.get(name)) : tape.input(tensor));
  }
  return vars;
}

/** The generator's parameters and the task-vector table on the GPU. */
export class SuperNet {
  /** The target architecture. */
  readonly spec: TargetSpec;
  /** The target's named weights. */
  readonly weights: WeightShape[];
  /** Generator parameters (one arena). */
  readonly params: Arena;
  /** Task vectors: one arena with the tensor "z" [tasks, zDim]. */
  readonly z: Arena;

  /** Allocates the arenas; `init` fills them with initial values. */
  constructor(readonly gpu: Gpu, readonly config: SuperNetConfig) {
    this.spec = makeTarget(config.target, {
      inputShape: config.inputShape,
      outputs: config.outputs,
      slope: config.slope,
      width: config.width,
    });
    this.weights = weightShapes(this.spec);
    this.params = new Arena(gpu);
    for (const p of generatorParams(config.generator, this.weights)) {
      this.params.add(p.name, p.shape);
    }
    this.params.allocate();
    this.z = new Arena(gpu);
    this.z.add("z", [config.tasks, config.generator.zDim]);
    this.z.allocate();
  }

  /** A SuperNet with freshly initialised generator and task vectors. */
  static create(gpu: Gpu, config: SuperNetConfig): SuperNet {
    const net = new SuperNet(gpu, config);
    const z = initTaskVectors(config.tasks, config.generator.zDim, {
      init: config.zInit,
      seed: config.seed,
    });
    const init = initGenerator(config.generator, net.weights, {
      z,
      tasks: config.tasks,
      seed: config.seed,
      slope: config.slope,
    });
    for (const { name, tensor } of net.params.entries) write(gpu, tensor, init.get(name)!);
    write(gpu, net.z.get("z"), z);
    return net;
  }

  /** Number of generator parameters. */
  get parameterCount(): number {
    return this.params.entries.reduce((n, e) => n + e.tensor.size, 0);
  }

  /**
   * Records the forward on a tape: the z of `taskIndices` (u32 [T]) generate T weight sets that
   * classify x [T, B, C, H, W]; returns logits [T, B, outputs]. Gradients flow into the arenas of
   * `grads` that are given (params and/or z); what has no gradient arena is frozen. `table`
   * replaces the task-vector table (an arena with a tensor "z" of the same width).
   */
  forward(
    tape: Tape,
    inputs: {
      x: Tensor;
      taskIndices: Tensor;
      grads?: { params?: Arena; z?: Arena };
      table?: Arena;
    },
  ): Var {
    const params = arenaVars(tape, this.params, inputs.grads?.params);
    const table = arenaVars(tape, inputs.table ?? this.z, inputs.grads?.z).get("z")!;
    const z = tape.gatherRows(table, inputs.taskIndices);
    const weights = generatorForward(tape, this.config.generator, {
      params,
      z,
      targetWeights: this.weights,
      slope: this.config.slope,
    });
    return targetForward(tape, this.spec, { weights, x: tape.input(inputs.x) });
  }

  /** Frees the arenas. */
  destroy(): void {
    this.params.destroy();
    this.z.destroy();
  }
}

/**
 * The `full` baseline: the same target network with ordinary weights (PyTorch's default init),
 * one set per task, trained directly. With `frozen`, the named tensors live in a separate arena
 * (`fixed`) that the forward reads but never trains: the `head` baseline freezes every layer of
 * a generated network except the last.
 */
export class PlainNet {
  /** The target architecture. */
  readonly spec: TargetSpec;
  /** Trainable weights [tasks, ...shape] by name. */
  readonly params: Arena;
  /** Frozen weights [tasks, ...shape] by name (empty unless `frozen` names some). */
  readonly fixed: Arena;

  /** Allocates and initialises `tasks` independent weight sets. */
  constructor(
    readonly gpu: Gpu,
    config:
      & Pick<SuperNetConfig, "target" | "inputShape" | "outputs" | "slope" | "seed" | "width">
      & {
        tasks: number;
        frozen?: ReadonlySet<string>;
        seeds?: readonly number[];
      },
  ) {
    this.spec = makeTarget(config.target, config);
    this.params = new Arena(gpu);
    this.fixed = new Arena(gpu);
    const shapes = weightShapes(this.spec);
    for (const w of shapes) {
      const arena = config.frozen?.has(w.name) ? this.fixed : this.params;
      arena.add(w.name, [config.tasks, ...w.shape]);
    }
    this.params.allocate();
    this.fixed.allocate();
    // Task t's weights come from a stream of its own (seed `seeds[t]`), so a network starts the
    // same whichever tasks are batched beside it.
    const seeds = config.seeds ?? [config.seed];
    if (seeds.length !== 1 && seeds.length !== config.tasks) {
      throw new RangeError(`Expected 1 or ${config.tasks} seeds, got ${seeds.length}`);
    }
    const streams = Array.from(
      { length: config.tasks },
      (_, t) => new Random(seeds.length === 1 ? seeds[0]! : seeds[t]!),
    );
    for (const w of shapes) {
      const size = w.shape.reduce((a, b) => a * b, 1);
      const values = new Float32Array(size * config.tasks);
      const bound = standardInitStd(w.fanIn) * Math.sqrt(3);
      for (let t = 0; t < config.tasks; t++) {
        const rand = seeds.length === 1 ? streams[0]! : streams[t]!;
        values.set(rand.fillUniform(new Float32Array(size), bound), t * size);
      }
      write(gpu, this.#tensor(w.name), values);
    }
  }

  #tensor(name: string): Tensor {
    return this.fixed.entries.some((e) => e.name === name)
      ? this.fixed.get(name)
      : this.params.get(name);
  }

  /** Overwrites weights by name with values [tasks, ...shape]. */
  assign(values: ReadonlyMap<string, Float32Array>): void {
    for (const [name, data] of values) write(this.gpu, this.#tensor(name), data);
  }

  /**
   * Records the forward: the weight sets of `taskIndices` (u32 [n]) classify x [n, B, C, H, W];
   * returns logits [n, B, outputs]. The sets are gathered like SuperNet's z rows, so a chunk of
   * n < T slots (evaluation in chunks) sees its own weights, and gradients flow back to them.
   */
  forward(tape: Tape, inputs: { x: Tensor; taskIndices: Tensor; grads?: Arena }): Var {
    const all = [
      ...arenaVars(tape, this.fixed, undefined),
      ...arenaVars(tape, this.params, inputs.grads),
    ];
    const n = inputs.taskIndices.size;
    const weights = new Map(all.map(([name, w]) => {
      const [tasks, ...shape] = w.shape;
      const rows = w.reshape([tasks!, w.tensor.size / tasks!]);
      return [name, tape.gatherRows(rows, inputs.taskIndices).reshape([n, ...shape])];
    }));
    return targetForward(tape, this.spec, { weights, x: tape.input(inputs.x) });
  }

  /** Frees the arenas. */
  destroy(): void {
    this.params.destroy();
    this.fixed.destroy();
  }
}
