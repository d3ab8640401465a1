/**
 * What one `adapt` call hands every room that trains or scores: the device, the run, the images.
 *
 * @module
 */
import type { Dataset } from "../data/split.ts";
import type { ImageStore } from "../data/sampler.ts";
import type { TaskFamily } from "../data/tasks.ts";
import type { Gpu } from "../gpu/device.ts";
import type { NamedTensor } from "../safetensors.ts";
import type { RunState } from "../train.ts";
import type { AdaptEvent, AdaptOptions } from "./options.ts";

/** What every method of one `adapt` call shares. */
export interface Context {
  gpu: Gpu;
  options: AdaptOptions;
  state: RunState;
  family: TaskFamily;
  dataset: Dataset;
  tensors: Map<string, NamedTensor>;
  path: string;
  table: Float32Array;
  trainStore: ImageStore;
  testStore: ImageStore;
  onEvent?: (e: AdaptEvent) => void;
}
