"""The yardstick of `deno task bench`: the fp32 GEMM rate of this CPU through numpy and through
PyTorch (whichever are installed), and the BLAS library each one actually ran, as reported by the
library (threadpoolctl where installed, else the shared objects loaded into this process, and
PyTorch's own build report), never a guess.

Where PyTorch sees a CUDA device it also measures that GPU's fp32 GEMM peak (cuBLAS through
torch.mm with TF32 off, so every product is full fp32, at 4096 and 8192; the best of the two),
the yardstick of `deno task bench` on a GPU.

Usage: python3 src/peers/blas_peak.py N  -> prints one JSON object:
  {"python": ..., "numpy": {"version", "gflops", "blas"} | null,
   "torch": {"version", "gflops", "blas", "threads", "cuda",
             "cuda_fp32": {"device", "gflops", "by_size"} | null} | null}
"""
import json
import os
import re
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2048


def median_rate(fn, n):
    fn()
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return 2 * n ** 3 / ts[2] / 1e9


def loaded_blas():
    """BLAS-like shared objects mapped into this process, resolved to their real files."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path).lower()
                if any(k in name for k in ("blas", "mkl", "blis", "accelerate", "armpl")):
                    real = os.path.realpath(path)
                    if real not in found:
                        found.append(real)
    except OSError:
        pass
    return found


def threadpool_report():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [
        {k: i.get(k) for k in ("internal_api", "version", "filepath", "num_threads")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]


out = {"python": sys.executable, "numpy": None, "torch": None}
try:
    import numpy as np

    a = np.random.rand(N, N).astype(np.float32)
    b = np.random.rand(N, N).astype(np.float32)
    rate = median_rate(lambda: a @ b, N)
    report = threadpool_report()
    out["numpy"] = {
        "version": np.__version__,
        "gflops": rate,
        "blas": report if report else [{"filepath": p} for p in loaded_blas()],
        "source": "threadpoolctl" if report else "loaded shared objects",
    }
except ImportError:
    pass
try:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    a = torch.rand(N, N)
    b = torch.rand(N, N)
    rate = median_rate(lambda: torch.mm(a, b), N)
    config = torch.__config__.show()
    blas = re.findall(r"(?:BLAS_INFO|LAPACK_INFO|USE_MKL|USE_MKLDNN)=[^,\s]+", config)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = None
    out["torch"] = {
        "version": torch.__version__,
        "gflops": rate,
        "blas": blas,
        "cpu_capability": capability,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_fp32": None,
    }
    if torch.cuda.is_available():
        # Full fp32: no TF32 tensor-core shortcut, which rounds the inputs to 10-bit mantissas.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        by_size = {}
        for n in (4096, 8192):
            x = torch.rand(n, n, device="cuda")
            y = torch.rand(n, n, device="cuda")
            for _ in range(3):
                torch.mm(x, y)
            torch.cuda.synchronize()
            ts = []
            for _ in range(5):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(5):
                    torch.mm(x, y)
                end.record()
                torch.cuda.synchronize()
                ts.append(start.elapsed_time(end) / 1000 / 5)
            ts.sort()
            by_size[str(n)] = 2 * n ** 3 / ts[2] / 1e9
            del x, y
        out["torch"]["cuda_fp32"] = {
            "device": torch.cuda.get_device_name(0),
            "gflops": max(by_size.values()),
            "by_size": by_size,
        }
except ImportError:
    pass
print(json.dumps(out))
