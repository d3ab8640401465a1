// Assembles one step's input batch from the dataset's images on the GPU:
//   x[t, b, c, y, x] = (p / 255 - mean[c]) / std[c]
// where p is pixel (c, sy, sx) of image indices[t, b], or 0 (a black pixel) where the crop
// reaches past the image. With augmentation, a hash of (seed, step, t, b) picks the crop offset
// (ox, oy) in [0, 2 pad] of the image padded by `pad` pixels, and a horizontal flip (with
// `by_image`, the image's index takes the place of the slot t, so that a slot's draws do not
// depend on which slots run beside it):
//   sy = y + oy - pad, sx = (flip ? W - 1 - x : x) + ox - pad   (crop, then flip, as torchvision).
// Layout: images as bytes packed 4 per u32 (little-endian), each image padded to `words` words,
// split over 4 bindings of `per_chunk` images each (a binding may not exceed the device's
// maxStorageBufferBindingSize; unused bindings alias chunk 0); indices [T, B] u32;
// norm = [mean[0..C), std[0..C)] f32; x [T, B, C, H, W] f32 row-major.
// One output element per invocation, 256 per workgroup, on a 2D grid of workgroups
// (linear id = wid.x + wid.y * num_workgroups.x) so n may exceed 65535 * 256.
// Reference: tests/reference/sampler.ts (assemble, augmentation, pcg).

struct Params {
  n: u32,          // T * B * C * H * W
  batch: u32,      // B
  channels: u32,   // C
  height: u32,     // H
  width: u32,      // W
  per_chunk: u32,  // images per chunk binding
  words: u32,      // u32 words per image
  seed: u32,
  step: u32,
  pad: u32,        // crop padding in pixels (0: no crop)
  flip: u32,       // 1: random horizontal flips
  by_image: u32,   // 1: hash the image index instead of the slot t
}

@group(0) @binding(0) var<storage, read> chunk0: array<u32>;
@group(0) @binding(1) var<storage, read> chunk1: array<u32>;
@group(0) @binding(2) var<storage, read> chunk2: array<u32>;
@group(0) @binding(3) var<storage, read> chunk3: array<u32>;
@group(0) @binding(4) var<storage, read> indices: array<u32>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

// PCG output hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn word_at(chunk: u32, i: u32) -> u32 {
  switch chunk {
    case 0u: { return chunk0[i]; }
    case 1u: { return chunk1[i]; }
    case 2u: { return chunk2[i]; }
    default: { return chunk3[i]; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (e >= p.n) {
    return;
  }
  let plane = p.height * p.width;
  let per_image = p.channels * plane;
  let s = e / per_image;
  let r = e - s * per_image;
  let c = r / plane;
  let q = r - c * plane;
  let row = q / p.width;
  let col = q - row * p.width;
  let t = s / p.batch;
  let b = s - t * p.batch;

  var who = t;
  if (p.by_image == 1u) {
    who = indices[s];
  }
  var h = pcg(p.seed);
  h = pcg(h ^ p.step);
  h = pcg(h ^ who);
  h = pcg(h ^ b);
  let span = 2u * p.pad + 1u;
  let ox = h % span;
  h = pcg(h);
  let oy = h % span;
  h = pcg(h);
  let flipped = p.flip == 1u && (h & 1u) == 1u;

  let sy = i32(row) + i32(oy) - i32(p.pad);
  var cx = col;
  if (flipped) {
    cx = p.width - 1u - col;
  }
  let sx = i32(cx) + i32(ox) - i32(p.pad);

  var pixel = 0u;
  if (sy >= 0 && sy < i32(p.height) && sx >= 0 && sx < i32(p.width)) {
    let image = indices[s];
    let chunk = image / p.per_chunk;
    let local = image - chunk * p.per_chunk;
    let byte = c * plane + u32(sy) * p.width + u32(sx);
    let w = word_at(chunk, local * p.words + byte / 4u);
    pixel = (w >> ((byte % 4u) * 8u)) & 255u;
  }
  x[e] = (f32(pixel) / 255.0 - norm[c]) / norm[p.channels + c];
}
