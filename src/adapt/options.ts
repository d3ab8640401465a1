/**
 * The options of `adapt` and their defaults, the methods and starting points it knows, and the
 * shapes of what it reports: the vocabulary every other room of `adapt` speaks.
 *
 * @module
 */
import type { Dataset } from "../data/split.ts";
import type { Task } from "../data/tasks.ts";
import type { OPTIMIZERS } from "../optim.ts";

/**
 * Ways to learn a held-out task: `zero-shot` (mean z, no training), `z` (z only, generator
 * frozen), `z-seed` (z only with the seed's recipe: mean z, fixed lr and steps, no validation),
 * `head` (the network generated from the starting z with only its last layer trained), `full`
 * (the whole target network from scratch), `finetune` (generator and z), and `z-untrained` (z
 * only through an untrained generator, a control).
 */
export const METHODS = [
  "zero-shot",
  "z",
  "z-seed",
  "head",
  "full",
  "finetune",
  "z-untrained",
] as const;
/** One of {@link METHODS}. */
export type Method = typeof METHODS[number];
/**
 * Initial z of a new task: `population` (the K trained z that fit the task's training images
 * best, plus the mean z, adapted side by side; the validation slice picks the winner), `best`
 * (the trained z with the lowest training loss), `mean`, `zero`, `random`, `one_hot`.
 */
export const Z_INITS = ["population", "best", "mean", "zero", "random", "one_hot"] as const;
/** One of {@link Z_INITS}. */
export type ZInitName = typeof Z_INITS[number];

/** Options of `adapt` (the CLI maps its flags 1:1 onto these). */
export interface AdaptOptions {
  /** Run folder written by `train`. */
  run: string;
  /**
   * Tasks to learn: an index or name, a comma list of them, or `all-heldout` (every held-out
   * task, adapted together in one batched program). Default: the first held-out task.
   */
  task?: string;
  /** Methods to compare, in order. */
  methods: Method[];
  /** Initial z of `z` (and the start of `head` and `finetune`). */
  init: ZInitName;
  /** K of `population`: trained z adapted beside the mean z. */
  population: number;
  /** Most steps of every method (early stopping may stop sooner). */
  steps: number;
  /** Images per step (at most the images a task learns from). */
  batch: number;
  /** Images per class to learn from (0: all of the task's training images). */
  shots: number;
  /** Learning rate of z-only adaptation (0: the rule, 0.1 x the trained z's spread). */
  lr: number;
  /** Learning rate of `full` (the centre of its grid). */
  fullLr: number;
  /** Learning rate of `head` (the centre of its grid). */
  headLr: number;
  /** Learning rate of `finetune` (the centre of its grid). */
  finetuneLr: number;
  /** Baselines pick their learning rate on the validation slice from lr x {1/3, 1, 3}. */
  lrGrid: boolean;
  /**
   * The budget of `full` in epochs of a task's learning images: it runs up to the larger of
   * `steps` and this many epochs, evaluating at least once an epoch, and early stopping on the
   * validation slice (`patience` evaluations without a lower loss) ends it sooner. 0: `steps`.
   */
  fullEpochs: number;
  /**
   * Weight decays of `full` (decoupled, as AdamW: p *= 1 - lr x decay every step), chosen per
   * task on the validation slice together with the learning rate; without a slice, the first.
   */
  fullWeightDecay: number[];
  /**
   * Random crops for `full` (padding H / 8 pixels), and horizontal flips where a mirror image
   * keeps its class (photographs: CIFAR; not digits or characters).
   */
  fullAugment: boolean;
  /**
   * Strength of the Gaussian prior on z around the trained z's mean, in units of their spread:
   * the loss gains prior / 2 * |z - mean|^2 / (zDim * spread^2) (0: off).
   */
  prior: number;
  /**
   * The number of learning images `prior` was chosen for (0 or absent: the prior is used as
   * given). With n learning images per task (the mean over the call's tasks) the prior becomes
   * prior x priorImages / n: the mean loss over n images weighs the data as 1 / n would in a
   * posterior, so the prior's relative weight scales as 1 / n.
   */
  priorImages?: number;
  /** Steps of the z methods (`z`, `z-untrained`; absent: `steps`), e.g. a recipe's choice. */
  zSteps?: number;
  /**
   * The validation slice, carved from the task's training images. For a run trained without a
   * reserve, the fraction of each class held out as the slice (0: none). For a run trained with
   * one (`train --reserve` > 0, the default), the slice is the task's reserved images, which the
   * generator never trained on, whatever the fraction: any value > 0 turns that slice on and 0
   * turns it off. Classes with fewer than 10 images give none: few-shot runs use every image to
   * learn from, end every slot at its last step, and pick among starting points by their
   * training loss there.
   */
  validation: number;
  /** Optimiser of every method. */
  optimizer: typeof OPTIMIZERS[number];
  /** Evaluate (validation and test) every N steps. */
  evalEvery: number;
  /** Stop after this many evaluations without a lower validation loss (0: run every step). */
  patience: number;
  /** Re-score the training tasks after `finetune` to measure forgetting. */
  forgetting: boolean;
  /**
   * Score the test images at every evaluation (learning curves); off, the test images are
   * scored once, at the chosen point.
   */
  curves: boolean;
  /** Seed of sampling, few-shot subsets and the random init. */
  seed: number;
  /** Folder of dataset files (default: as in training). */
  dataDir?: string;
  /** Check dataset files against their published sums (default: as in training). */
  verify?: boolean;
  /** Folder of the results (default: <run>/adapt). */
  out?: string;
  /** A task of the caller's own (e.g. from image folders) instead of one of the run's family. */
  custom?: CustomTask;
}

/**
 * A two-class task brought by the caller: its images (train split to learn from, test split to
 * score on; the run's input shape and normalisation statistics) and its task over their classes.
 * It borrows the z-table row of `task` (default: the first held-out task) while adapting.
 */
export interface CustomTask {
  /** The images, shaped and normalised like the run's. */
  dataset: Dataset;
  /** The task over the dataset's classes, e.g. negative [0], positive [1]. */
  task: Task;
  /** Name of the learned z file: `z_<name>.safetensors`. */
  name: string;
}

/** Defaults: population init, validation-based stopping and the prior, sized for a CPU. */
export const ADAPT_DEFAULTS: AdaptOptions = {
  run: "runs/latest",
  methods: ["zero-shot", "z", "full"],
  init: "population",
  population: 3,
  steps: 200,
  batch: 64,
  shots: 0,
  lr: 0,
  fullLr: 0.001,
  headLr: 0.01,
  finetuneLr: 0.0003,
  lrGrid: true,
  fullEpochs: 30,
  fullWeightDecay: [0, 0.1],
  fullAugment: true,
  prior: 0.05,
  validation: 0.1,
  optimizer: "adam",
  evalEvery: 25,
  patience: 3,
  forgetting: true,
  curves: true,
  seed: 1,
};

/**
 * The seed's adaptation recipe (`--preset seed`, and the `z-seed` method): the mean z, Adam at
 * 0.01 for a fixed 150 steps, no validation slice, no prior, no learning-rate grid.
 */
export const SEED_ADAPT_PRESET: Partial<AdaptOptions> = {
  init: "mean",
  population: 0,
  steps: 150,
  lr: 0.01,
  lrGrid: false,
  prior: 0,
  validation: 0,
  patience: 0,
};

/** A point of a learning curve on the test split. */
export interface CurvePoint {
  /** Steps done. */
  step: number;
  /** Test accuracy. */
  accuracy: number;
  /** Test loss. */
  loss: number;
}

/** What one method reached on one task. */
export interface MethodResult {
  /** The method. */
  method: Method;
  /** Numbers trained for this task. */
  trainable: number;
  /** Test accuracy at the chosen point (best validation loss, else the last step). */
  accuracy: number;
  /** Test loss at the chosen point. */
  loss: number;
  /** Steps at the chosen point. */
  steps: number;
  /** Steps run in all. */
  stepsRun: number;
  /** Wall time in seconds (a batched program's time is shared equally by its tasks). */
  seconds: number;
  /** Learning rate used (the grid's pick for baselines). */
  lr: number;
  /** Weight decay used (`full`: the grid's pick). */
  weightDecay?: number;
  /**
   * Images the chosen run drew to its last step (steps run x batch; a batched program's images
   * are each slot's own). With a grid, the other runs' images are in `searchImages`.
   */
  imagesSeen?: number;
  /** Images drawn by every run of the method's grid for this task (`imagesSeen` included). */
  searchImages?: number;
  /** Where z started (z methods, head and finetune). */
  start?: string;
  /** Validation loss at the chosen point, when there was a validation slice. */
  validationLoss?: number;
  /**
   * The network predicts one class for every test image (accuracy equals a class's share and
   * the loss is at least ln 2): it learned nothing about this task.
   */
  collapsed: boolean;
  /** Mean test accuracy of (up to 8) training tasks before and after this method (finetune). */
  forgetting?: { tasks: number; before: number; after: number };
  /** Test accuracy and loss along the way (of the chosen slot). */
  curve: CurvePoint[];
}

/** A trained task's z scored on the new task's training images. */
export interface RankedZ {
  /** The trained task. */
  task: number;
  /** Its mean loss on (up to 256 of) the new task's training images. */
  trainLoss: number;
}

/** The comparison on one task. */
export interface TaskAdaptResult {
  /** Task index in the family. */
  task: number;
  /** Task name, e.g. "8 vs 9". */
  taskName: string;
  /** Training images the methods learned from (validation slice excluded). */
  trainImages: number;
  /** Images of the validation slice. */
  validationImages: number;
  /** Test images evaluated. */
  testImages: number;
  /** Trained z ranked by training loss on this task, best first (population and best inits). */
  ranking: RankedZ[];
  /** One entry per method, in the order asked. */
  results: MethodResult[];
}

/** The comparison on every adapted task. */
export interface AdaptResult {
  /** One entry per task, in the order asked. */
  tasks: TaskAdaptResult[];
  /** Folder the results were written to. */
  out: string;
}

/** Progress while adapting. */
export type AdaptEvent =
  | {
    kind: "method";
    method: Method;
    trainable: number;
    slots: number;
    lr: number;
    /** `full`: the weight decay of this run of its grid. */
    weightDecay?: number;
    /** The step cap of this run. */
    steps?: number;
  }
  | {
    kind: "eval";
    method: Method;
    step: number;
    steps: number;
    /** Which images were scored: the test images (curves on) or the selection images. */
    split: "test" | "validation";
    accuracy: number;
    loss: number;
  };
