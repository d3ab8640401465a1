/**
 * Export of one task's generated network: the generator's output for a task vector z, written as
 * a safetensors file of PyTorch-layout tensors (conv weights [O, C, k, k], linear weights
 * [out, in], biases [out], named "conv1.weight", ...) plus a JSON description of the
 * architecture, so the network can be rebuilt and used without this tool.
 *
 * @module
 */
import type { Gpu } from "./gpu/device.ts";
import { run } from "./gpu/kernel.ts";
import { readMany, tensorFrom } from "./gpu/tensor.ts";
import { generatorForward } from "./model/generator.ts";
import type { SuperNet } from "./model/supernet.ts";
import type { Layer, TargetSpec } from "./model/target.ts";
import { type NamedTensor, saveSafetensors, writeAtomic } from "./safetensors.ts";
import { Tape, type Var } from "./tape.ts";

/** Version of the JSON description's layout. */
export const EXPORT_FORMAT_VERSION = 1;

/**
 * One layer of an exported network, as the JSON description lists it: the target's own layer
 * (conv tensors `${name}.weight` [O, C, k, k] and `${name}.bias` [O]; linear `${name}.weight`
 * [out, in] and `${name}.bias` [out]) plus the negative slope for leaky_relu.
 */
export type ExportedLayer = Layer & { slope?: number };

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
  /** The weights file, relative to this description. */
  weightsFile: string;
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

/** The JSON description of a target architecture whose weights are in `weightsFile`. */
export function describeArchitecture(
  spec: TargetSpec,
  options: {
    name: string;
    weights: ReadonlyMap<string, NamedTensor>;
    weightsFile: string;
    z: Float32Array;
  },
): ExportedArchitecture {
  const slopeOf = (activation: string) => activation === "leaky_relu" ? { slope: spec.slope } : {};
  const layers: ExportedLayer[] = spec.layers.map((layer) => {
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
    weightsFile: options.weightsFile,
    z: Array.from(options.z),
    torch: torchNote(layers),
  };
}

/** A short recipe for the equivalent torch.nn module, listing its layers. */
function torchNote(layers: ExportedLayer[]): string {
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
  return `An nn.Module with attributes ${modules.join("; ")}. Its forward(x), for x of shape ` +
    `[N, C, H, W], runs x = ${steps.join("; x = ")}; and returns x, the logits ` +
    `(binary tasks: sigmoid(logit) is the probability of class 1). Load the weights with ` +
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

/**
 * Writes the network that `net` generates for task vector z [zDim] into `dir` (created if
 * missing): the weights as `<name>.safetensors` (PyTorch layout and names) and the architecture
 * as `<name>.json`, each written atomically. Returns both paths.
 */
export async function exportTaskNetwork(
  gpu: Gpu,
  net: SuperNet,
  z: Float32Array,
  dir: string,
  options: { name: string },
): Promise<{ weights: string; architecture: string }> {
  const { name } = options;
  if (!/^[\w.-]+$/.test(name)) {
    throw new RangeError(
      `Export name must use only letters, digits, '_', '-' and '.', got '${name}'`,
    );
  }
  const generated = await generateWeights(gpu, net, z);
  const weights = new Map<string, NamedTensor>(
    net.weights.map((w) => [w.name, { shape: [...w.shape], data: generated.get(w.name)! }]),
  );
  const weightsFile = `${name}.safetensors`;
  const description = describeArchitecture(net.spec, { name, weights, weightsFile, z });
  const weightsPath = `${dir}/${weightsFile}`;
  const architecturePath = `${dir}/${name}.json`;
  await Deno.mkdir(dir, { recursive: true });
  await saveSafetensors(weightsPath, weights, {
    format: description.format,
    target: description.target,
    architecture: `${name}.json`,
  });
  await writeAtomic(architecturePath, JSON.stringify(description, null, 2) + "\n");
  return { weights: weightsPath, architecture: architecturePath };
}
