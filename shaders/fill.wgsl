// Fills a tensor with one value: out[i] = value for i < n. Used to zero gradient buffers that
// several backward kernels accumulate into. One element per invocation, 256 per workgroup, on a
// 2D grid of workgroups (linear id = wid.x + wid.y * num_workgroups.x) so n may exceed 65535 * 256.
// Reference: tests/reference/fill.ts.

struct Params {
  n: u32,
  value: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i < p.n) {
    out[i] = p.value;
  }
}
