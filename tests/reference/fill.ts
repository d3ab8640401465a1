/**
 * CPU reference of shaders/fill.wgsl.
 *
 * @module
 */

/** A new array of `n` copies of `value`. */
export function fill(n: number, value: number): Float32Array {
  return new Float32Array(n).fill(value);
}
