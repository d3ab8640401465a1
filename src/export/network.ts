/**
 * The one description of an exported task network that every format shares: the generator's
 * weights for a task vector z (PyTorch layout: conv [O, C, k, k], linear [out, in], bias [out],
 * named "conv1.weight", ...), and the JSON that records the layers, the input preprocessing, the
 * meaning of the labels and where the weights came from.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { run } from "../gpu/kernel.ts";
import { readMany, tensorFrom } from "../gpu/tensor.ts";
import type { Preprocessing } from "../images.ts";
import { generatorForward } from "../model/generator.ts";
import type { SuperNet } from "../model/supernet.ts";
import type { Layer, TargetSpec } from "../model/target.ts";
import type { NamedTensor } from "../safetensors.ts";
import { Tape, type Var } from "../tape.ts";

/**
 * Version of the JSON description's layout: 2 added `preprocessing`, `classNames`, `source` and
 * `onnxFile`.
 */
export const EXPORT_FORMAT_VERSION = 2;

/** Formats `export` writes besides the JSON description. */
export const EXPORT_FORMATS = ["safetensors", "onnx"] as const;
/** One of {@link EXPORT_FORMATS}. */
export type ExportFormat = typeof EXPORT_FORMATS[number];

/** Where an exported network came from. */
export interface ExportSource {
  /** The run folder of the generator. */
  run: string;
  /** Training steps of the generator's checkpoint. */
  step: number;
  /** The dataset the generator was trained on (its record, e.g. file names and checks). */
  dataset: string;
  /** Where z came from: a z file written by adapt, or a task of the run. */
  z: string;
}

/**
 * One layer of an exported network, as the JSON description lists it: the target's own layer
 * (conv tensors `${name}.weight` [O, C, k, k] and `${name}.bias` [O]; linear `${name}.weight`
 * [out, in] and `${name}.bias` [out]) plus the negative slope for leaky_relu.
 */
export type ExportedLayer = Exclude<Layer, { kind: "norm" } | { kind: "pool" }> & {
  slope?: number;
};

/** The JSON description written beside the weights. */
export interface ExportedArchitecture {
  /** Always "supernet-task-network". */
  format: "supernet-task-network";
  /** `EXPORT_FORMAT_VERSION`. */
  version: number;
  /** The export's name. */
  name: string;
  /** Registered target architecture, e.g. "seed_cnn". */
  target: string;
  /** Input of one sample, [C, H, W]. */
  inputShape: [number, number, number];
  /** Logits per sample (1: binary, sigmoid(logit) = P(class 1)). */
  outputs: number;
  /** Layers in order. */
  layers: ExportedLayer[];
  /** Shape of every tensor of the weights file, by name. */
  weights: Record<string, number[]>;
  /** The safetensors weights file, relative to this description (when written). */
  weightsFile?: string;
  /** The ONNX model, relative to this description (when written). */
  onnxFile?: string;
  /** What an input must be: size, channels, scale to [0, 1], mean and std. */
  preprocessing?: Preprocessing;
  /**
   * classNames[k] is the class of label k; the logit is the log-odds of classNames[1], so
   * sigmoid(logit) is the probability of that (positive) class.
   */
  classNames?: [string, string];
  /** The generator and task vector the weights came from. */
  source?: ExportSource;
  /** The task vector the weights were generated from. */
  z: number[];
  /** How to build the equivalent torch.nn model. */
  torch: string;
}

/**
 * The weights the generator of `net` produces for one task vector z [zDim], computed on the GPU,
 * by target weight name, each in PyTorch layout (conv [O, C, k, k], linear [out, in], bias [out];
 * the shapes are those of `net.weights`).
 */
export async function generateWeights(
  gpu: Gpu,
  net: SuperNet,
  z: Float32Array,
): Promise<Map<string, Float32Array>> {
  const zDim = net.config.generator.zDim;
  if (z.length !== zDim) {
    throw new RangeError(`Expected a task vector of ${zDim} values, got ${z.length}`);
  }
  const zTensor = tensorFrom(gpu, [1, zDim], z);
  const tape = new Tape(gpu);
  try {
    const params = new Map<string, Var>(
      net.params.entries.map((e) => [e.name, tape.input(e.tensor)]),
    );
    const generated = generatorForward(tape, net.config.generator, {
      params,
      z: tape.input(zTensor),
      targetWeights: net.weights,
      slope: net.config.slope,
    });
    run(gpu, tape.forward);
    const values = await readMany(gpu, net.weights.map((w) => generated.get(w.name)!.tensor));
    return new Map(net.weights.map((w, i) => [w.name, values[i]!]));
  } finally {
    tape.destroy();
    zTensor.destroy();
  }
}

/** The JSON description of a target architecture whose weights are `weights`. */
export function describeArchitecture(
  spec: TargetSpec,
  options: {
    name: string;
    weights: ReadonlyMap<string, NamedTensor>;
    weightsFile?: string;
    onnxFile?: string;
    z: Float32Array;
    preprocessing?: Preprocessing;
    classNames?: [string, string];
    source?: ExportSource;
  },
): ExportedArchitecture {
  const slopeOf = (activation: string) => activation === "leaky_relu" ? { slope: spec.slope } : {};
  const layers: ExportedLayer[] = spec.layers.map((layer) => {
    if (layer.kind === "norm" || layer.kind === "pool") {
      throw new RangeError(
        `Export covers networks of convolutions and linear layers; target '${spec.name}' has ` +
          `batch norm with per-batch statistics and pooling, which the export does not describe yet`,
      );
    }
    if (layer.kind === "conv") {
      const { name, inChannels, outChannels, kernel, stride, padding, activation } = layer;
      return {
        kind: "conv",
        name,
        inChannels,
        outChannels,
        kernel,
        stride,
        padding,
        activation,
        ...slopeOf(activation),
      };
    }
    if (layer.kind === "linear") {
      const { name, inFeatures, outFeatures, activation } = layer;
      return { kind: "linear", name, inFeatures, outFeatures, activation, ...slopeOf(activation) };
    }
    return { kind: "flatten" };
  });
  return {
    format: "supernet-task-network",
    version: EXPORT_FORMAT_VERSION,
    name: options.name,
    target: spec.name,
    inputShape: [...spec.inputShape],
    outputs: spec.outputs,
    layers,
    weights: Object.fromEntries([...options.weights].map(([n, t]) => [n, [...t.shape]])),
    ...(options.weightsFile ? { weightsFile: options.weightsFile } : {}),
    ...(options.onnxFile ? { onnxFile: options.onnxFile } : {}),
    ...(options.preprocessing ? { preprocessing: options.preprocessing } : {}),
    ...(options.classNames ? { classNames: options.classNames } : {}),
    ...(options.source ? { source: options.source } : {}),
    z: Array.from(options.z),
    torch: torchNote(layers, options.preprocessing),
  };
}

/** A short recipe for the equivalent torch.nn module, listing its layers and its input. */
function torchNote(layers: ExportedLayer[], preprocessing?: Preprocessing): string {
  const modules: string[] = [];
  const steps: string[] = [];
  for (const layer of layers) {
    if (layer.kind === "conv") {
      modules.push(
        `${layer.name} = nn.Conv2d(${layer.inChannels}, ${layer.outChannels}, ${layer.kernel}, ` +
          `stride=${layer.stride}, padding=${layer.padding})`,
      );
      steps.push(activationCall(layer.name, layer.activation, layer.slope));
    } else if (layer.kind === "linear") {
      modules.push(`${layer.name} = nn.Linear(${layer.inFeatures}, ${layer.outFeatures})`);
      steps.push(activationCall(layer.name, layer.activation, layer.slope));
    } else {
      steps.push("torch.flatten(x, 1)");
    }
  }
  const input = preprocessing
    ? `x = (x - mean) / std with mean = torch.tensor(${
      JSON.stringify(preprocessing.mean)
    }).view(1, -1, 1, 1) and std = torch.tensor(${
      JSON.stringify(preprocessing.std)
    }).view(1, -1, 1, 1) (see "preprocessing": x holds 8-bit pixel values / 255, ${preprocessing.channels}); x = `
    : "x = ";
  return `An nn.Module with attributes ${modules.join("; ")}. Its forward(x), for x of shape ` +
    `[N, C, H, W], runs ${input}${steps.join("; x = ")}; and returns x, the logits ` +
    `(binary tasks: sigmoid(logit) is the probability of class 1${
      preprocessing ? ", classNames[1]" : ""
    }). Load the weights with ` +
    `model.load_state_dict(safetensors.torch.load_file(weightsFile)): the tensor names and ` +
    `layouts are those of this module's state_dict.`;
}

function activationCall(name: string, activation: string, slope?: number): string {
  switch (activation) {
    case "leaky_relu":
      return `F.leaky_relu(${name}(x), ${slope})`;
    case "identity":
      return `${name}(x)`;
    default:
      return `torch.${activation}(${name}(x))`;
  }
}
