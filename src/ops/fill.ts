/**
 * Fill: set every element of a tensor to one value (shaders/fill.wgsl).
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Prepares `out[i] = value` for every element of `out`. */
export function fill(gpu: Gpu, out: Tensor, value = 0): Dispatch[] {
  const uniform = new Uniform(gpu, [["u32", out.size], ["f32", value]]);
  return [prepare(gpu, pipeline(gpu, "fill"), [out], grid(Math.ceil(out.size / 256)), uniform)];
}
