// Row gather and its backward, the scatter-add of rows. Reference: tests/reference/gather.ts.
//
// Layout: table and dTable [N, D], indices u32 [T], out and dOut [T, D], all row-major.
// Tiling: one output element per invocation, 256 per workgroup, on a 2D grid of workgroups
// (linear id = wid.x + wid.y * num_workgroups.x).
//
// gather_rows: out[t, d] = table[indices[t], d]; an index >= N gives NaN so that the bug shows in
// the loss rather than as a silently zero row.
// scatter_rows_add: dTable[n, d] (+)= sum over t with indices[t] == n of dOut[t, d]. The
// invocation that owns dTable[n, d] loops over t in order, so repeated indices add up
// deterministically without atomics; out-of-range indices reach no row. Rows that no index names
// are set to 0, or left as they are when accumulating.

override ACCUMULATE: bool = false;

struct Params {
  tasks: u32,
  width: u32,
  rows: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= p.tasks * p.width) {
    return;
  }
  let row = indices[i / p.width];
  if (row < p.rows) {
    dst[i] = src[row * p.width + i % p.width];
  } else {
    dst[i] = bitcast<f32>(0x7fc00000u);
  }
}

@compute @workgroup_size(256)
fn scatter_rows_add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= p.rows * p.width) {
    return;
  }
  let n = i / p.width;
  let d = i % p.width;
  var sum = 0.0;
  var hit = false;
  for (var t = 0u; t < p.tasks; t++) {
    if (indices[t] == n) {
      sum += src[t * p.width + d];
      hit = true;
    }
  }
  if (!ACCUMULATE) {
    dst[i] = sum;
  } else if (hit) {
    dst[i] += sum;
  }
}
