/**
 * ONNX export of a task network: the graph takes raw images x [N, C, H, W] with 8-bit values
 * scaled to [0, 1], normalises them with the run's mean and std (its first nodes), runs the
 * layers of the shared description, and returns `logit` [N, outputs] and `probability`
 * (sigmoid of the logit: of classNames[1] for binary tasks). Labels, preprocessing and source are
 * also stored as the model's metadata.
 *
 * The protobuf encoding is protobufjs's, over the schema of ONNX's own onnx.proto (ONNX 1.23.1,
 * Apache-2.0) converted to protobufjs JSON by `pbjs -t json onnx.proto` into onnx_proto.json.
 * IR version 8 with opset 13, which every current runtime reads.
 *
 * @module
 */
import protobuf from "protobufjs";
import schema from "./onnx_proto.json" with { type: "json" };
import type { ExportedArchitecture, ExportedLayer } from "./network.ts";

const root = protobuf.Root.fromJSON(schema);
const ModelProto = root.lookupType("onnx.ModelProto");

/** ONNX IR version written. */
export const ONNX_IR_VERSION = 8;
/** ONNX operator set written. */
export const ONNX_OPSET = 13;

const FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTRIBUTE = { FLOAT: 1, INT: 2, INTS: 7 } as const; // AttributeProto.AttributeType

interface Node {
  opType: string;
  name: string;
  input: string[];
  output: string[];
  attribute?: Record<string, unknown>[];
}

function ints(name: string, values: number[]): Record<string, unknown> {
  return { name, type: ATTRIBUTE.INTS, ints: values };
}

function int(name: string, value: number): Record<string, unknown> {
  return { name, type: ATTRIBUTE.INT, i: value };
}

function initializer(name: string, dims: number[], data: Float32Array): Record<string, unknown> {
  const size = dims.reduce((a, b) => a * b, 1);
  if (data.length !== size) {
    throw new RangeError(
      `Tensor ${name}: expected ${size} values for [${dims}], got ${data.length}`,
    );
  }
  // raw_data is little-endian; copy so that the bytes are exactly this tensor's.
  const bytes = new Uint8Array(size * 4);
  const view = new DataView(bytes.buffer);
  data.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return { name, dims, dataType: FLOAT, rawData: bytes };
}

function activationNodes(layer: ExportedLayer & { name: string }, input: string): Node[] {
  const activation = "activation" in layer ? layer.activation : "identity";
  const output = `${layer.name}.out`;
  switch (activation) {
    case "identity":
      return [{ opType: "Identity", name: `${layer.name}.act`, input: [input], output: [output] }];
    case "leaky_relu":
      return [{
        opType: "LeakyRelu",
        name: `${layer.name}.act`,
        input: [input],
        output: [output],
        attribute: [{ name: "alpha", type: ATTRIBUTE.FLOAT, f: layer.slope ?? 0.01 }],
      }];
    case "relu":
      return [{ opType: "Relu", name: `${layer.name}.act`, input: [input], output: [output] }];
    case "tanh":
      return [{ opType: "Tanh", name: `${layer.name}.act`, input: [input], output: [output] }];
    case "sigmoid":
      return [{ opType: "Sigmoid", name: `${layer.name}.act`, input: [input], output: [output] }];
    default:
      throw new RangeError(`Activation '${activation}' has no ONNX export`);
  }
}

/**
 * The ONNX model (serialised ModelProto) of a described network with its weights (PyTorch layout,
 * by name). The description must carry `preprocessing`, whose mean and std become the first
 * nodes.
 */
export function onnxModel(
  description: ExportedArchitecture,
  weights: ReadonlyMap<string, Float32Array>,
): Uint8Array {
  const pre = description.preprocessing;
  if (!pre) throw new RangeError("An ONNX export needs the description's preprocessing");
  const [channels, height, width] = description.inputShape;
  const weight = (name: string): Float32Array => {
    const w = weights.get(name);
    if (!w) throw new RangeError(`Missing weight '${name}' for the ONNX export`);
    return w;
  };
  const initializers = [
    initializer("mean", [1, channels, 1, 1], Float32Array.from(pre.mean)),
    initializer("std", [1, channels, 1, 1], Float32Array.from(pre.std)),
  ];
  const nodes: Node[] = [
    { opType: "Sub", name: "normalise.sub", input: ["image", "mean"], output: ["centred"] },
    { opType: "Div", name: "normalise.div", input: ["centred", "std"], output: ["normalised"] },
  ];
  let x = "normalised";
  description.layers.forEach((layer, i) => {
    if (layer.kind === "flatten") {
      const output = `flatten${i}.out`;
      nodes.push({
        opType: "Flatten",
        name: `flatten${i}`,
        input: [x],
        output: [output],
        attribute: [int("axis", 1)],
      });
      x = output;
      return;
    }
    const shapes = description.weights;
    for (const part of ["weight", "bias"]) {
      const name = `${layer.name}.${part}`;
      initializers.push(initializer(name, shapes[name] ?? [], weight(name)));
    }
    const pre = `${layer.name}.pre`;
    if (layer.kind === "conv") {
      nodes.push({
        opType: "Conv",
        name: layer.name,
        input: [x, `${layer.name}.weight`, `${layer.name}.bias`],
        output: [pre],
        attribute: [
          ints("kernel_shape", [layer.kernel, layer.kernel]),
          ints("strides", [layer.stride, layer.stride]),
          ints("pads", [layer.padding, layer.padding, layer.padding, layer.padding]),
        ],
      });
    } else {
      nodes.push({
        opType: "Gemm",
        name: layer.name,
        input: [x, `${layer.name}.weight`, `${layer.name}.bias`],
        output: [pre],
        attribute: [int("transB", 1)],
      });
    }
    const act = activationNodes(layer, pre);
    nodes.push(...act);
    x = act.at(-1)!.output[0]!;
  });
  nodes.push({ opType: "Identity", name: "logit", input: [x], output: ["logit"] });
  nodes.push({ opType: "Sigmoid", name: "probability", input: ["logit"], output: ["probability"] });
  const tensorType = (dims: (number | string)[]) => ({
    tensorType: {
      elemType: FLOAT,
      shape: {
        dim: dims.map((d) => typeof d === "string" ? { dimParam: d } : { dimValue: d }),
      },
    },
  });
  const metadata: Record<string, string> = {
    format: description.format,
    name: description.name,
    target: description.target,
    preprocessing: JSON.stringify(pre),
    ...(description.classNames ? { classNames: JSON.stringify(description.classNames) } : {}),
    ...(description.source ? { source: JSON.stringify(description.source) } : {}),
    z: JSON.stringify(description.z),
  };
  const model = {
    irVersion: ONNX_IR_VERSION,
    opsetImport: [{ domain: "", version: ONNX_OPSET }],
    producerName: "supernet",
    producerVersion: String(description.version),
    docString: `Task network '${description.name}' generated by a SuperNet. Input 'image': ` +
      `[N, ${channels}, ${height}, ${width}] ${pre.channels}, 8-bit values / 255; normalised ` +
      `inside. Outputs 'logit' and 'probability' (sigmoid of the logit${
        description.classNames ? `: P(${description.classNames[1]})` : ""
      }).`,
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    graph: {
      name: description.name,
      node: nodes,
      initializer: initializers,
      input: [{ name: "image", type: tensorType(["N", channels, height, width]) }],
      output: [
        { name: "logit", type: tensorType(["N", description.outputs]) },
        { name: "probability", type: tensorType(["N", description.outputs]) },
      ],
    },
  };
  const problem = ModelProto.verify(model);
  if (problem) throw new Error(`ONNX model does not fit the schema: ${problem}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}
