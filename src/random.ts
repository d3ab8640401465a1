/**
 * Seeded pseudo-random numbers for initialisation and sampling, so runs are reproducible: one
 * small generator (mulberry32, 32-bit state, no allocation per draw) and a seed hash.
 *
 * @module
 */

/** Hash of two 32-bit integers into one (PCG output permutation); used to derive seeds. */
export function mixSeed(a: number, b: number): number {
  return pcgHash((pcgHash(a >>> 0) ^ (b >>> 0)) >>> 0);
}

function pcgHash(v: number): number {
  const state = (Math.imul(v, 747796405) + 2891336453) >>> 0;
  const word = Math.imul((state >>> ((state >>> 28) + 4)) ^ state, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** A seeded generator (mulberry32); good enough for sampling and init, not for cryptography. */
export class Random {
  #state = 0;

  /** A generator at `seed`. */
  constructor(seed = 0) {
    this.reset(seed);
  }

  /** Restarts the sequence at `seed`, in place. */
  reset(seed: number): void {
    this.#state = seed >>> 0;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A uniform number in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** A uniform integer in [0, n) for 0 < n <= 2^32 (bias below n / 2^32, negligible here). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A standard normal number (Box-Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Fills `out` with U(-bound, bound) and returns it. */
  fillUniform(out: Float32Array, bound: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = (2 * this.next() - 1) * bound;
    return out;
  }

  /** Shuffles `array` in place (Fisher-Yates) and returns it. */
  shuffle<A extends { length: number; [i: number]: T }, T>(array: A): A {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const keep = array[i]!;
      array[i] = array[j]!;
      array[j] = keep;
    }
    return array;
  }
}
