"""The yardstick of `deno task bench`: the fp32 GEMM rate of this CPU through numpy and through
PyTorch (whichever are installed), and the BLAS library each one actually ran, as reported by the
library (threadpoolctl where installed, else the shared objects loaded into this process, and
PyTorch's own build report), never a guess.

Usage: python3 src/peers/blas_peak.py N  -> prints one JSON object:
  {"python": ..., "numpy": {"version", "gflops", "blas"} | null,
   "torch": {"version", "gflops", "blas", "threads", "cuda"} | null}
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
    }
except ImportError:
    pass
print(json.dumps(out))
