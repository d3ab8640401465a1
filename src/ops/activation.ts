/**
 * The activations the kernels know, and the codes their WGSL `ACT` override constants use (the
 * same numbering in elementwise.wgsl, matmul.wgsl and conv2d.wgsl).
 *
 * @module
 */

/** An activation; each has a backward computed from its output. */
export type Activation = "identity" | "relu" | "leaky_relu" | "tanh" | "sigmoid";

/** WGSL code of each activation. */
export const ACTIVATION_CODES: Readonly<Record<Activation, number>> = {
  identity: 0,
  relu: 1,
  leaky_relu: 2,
  tanh: 3,
  sigmoid: 4,
};

/** The code of `activation`, or a RangeError listing the valid names. */
export function activationCode(activation: string): number {
  const code = ACTIVATION_CODES[activation as Activation];
  if (code === undefined) {
    throw new RangeError(
      `Unknown activation '${activation}'; expected one of ${
        Object.keys(ACTIVATION_CODES).join(", ")
      }`,
    );
  }
  return code;
}
