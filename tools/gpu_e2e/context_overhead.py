#!/usr/bin/env python3
"""What a vLLM worker holds on its GPU before vLLM's memory snapshot, outside the budget.

    python3 tools/gpu_e2e/context_overhead.py [--tp 1 2] [--out FILE.json]

vLLM's worker (v1/worker/gpu_worker.py init_device, 0.25.1 and 0.33) sets the device, initialises
the distributed groups (NCCL), creates the cuBLAS handles and only then takes its MemorySnapshot;
`requested_memory = ceil(total x utilization)` must fit in the free memory left at that point.
This measures the same steps, one process per GPU, with the image's torch and NCCL and the
multicast-off environment of the profiles:

  idle     NVML used before any process touches the GPU
  context  torch.cuda.set_device + torch.cuda.mem_get_info (the CUDA context)
  nccl     init_process_group("nccl") + one all_reduce of 1024 floats (communicator buffers)
  cublas   one 1024 x 1024 bf16 matmul (cuBLAS / cuBLASLt handles and workspace)

after each step: NVML used (the GPU as nvidia-smi sees it) and cudaMemGetInfo free, after
torch.cuda.empty_cache() as vLLM does before its snapshot. Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

GIB = 1 << 30
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def nvml_used(index: int) -> tuple[int, int]:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return int(info.used), int(info.total)
    finally:
        pynvml.nvmlShutdown()


def worker(rank: int, world: int, port: int, queue: Any) -> None:
    import torch
    import torch.distributed as dist

    steps: dict[str, Any] = {}

    def record(name: str) -> None:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(rank)
        used, nvml_total = nvml_used(rank)
        steps[name] = {"nvml_used": used, "cuda_free": int(free), "cuda_total": int(total), "nvml_total": nvml_total}

    torch.cuda.set_device(rank)
    record("context")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    x = torch.ones(1024, device="cuda")
    dist.all_reduce(x)
    assert float(x[0]) == world
    record("nccl")
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()
    del a
    record("cublas")
    dist.barrier()
    queue.put((rank, steps))
    dist.destroy_process_group()


def measure(world: int, port: int) -> dict[str, Any]:
    import torch.multiprocessing as mp

    idle = {r: nvml_used(r)[0] for r in range(world)}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    ranks = []
    for r in range(world):
        steps = results[r]
        prev = idle[r]
        row: dict[str, Any] = {"rank": r, "idle_nvml_used": idle[r]}
        for name in ("context", "nccl", "cublas"):
            row[f"{name}_bytes"] = steps[name]["nvml_used"] - prev
            prev = steps[name]["nvml_used"]
        row["before_snapshot_bytes"] = steps["cublas"]["nvml_used"] - idle[r]
        row["before_snapshot_gib"] = round(row["before_snapshot_bytes"] / GIB, 3)
        row["cuda_total"] = steps["cublas"]["cuda_total"]
        row["cuda_free_at_snapshot"] = steps["cublas"]["cuda_free"]
        row["cuda_used_at_snapshot_bytes"] = steps["cublas"]["cuda_total"] - steps["cublas"]["cuda_free"]
        row["nvml_total"] = steps["cublas"]["nvml_total"]
        row["steps"] = steps
        ranks.append(row)
    return {"tensor_parallel_size": world, "ranks": ranks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tp", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    for key, value in MULTICAST_OFF.items():
        os.environ.setdefault(key, value)
    import torch

    result: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "gpu": torch.cuda.get_device_name(0),
        "env": {k: os.environ.get(k) for k in MULTICAST_OFF},
        "method": " ".join(__doc__.split("\n\n")[2:]).replace("\n", " ") if __doc__ else "",
        "runs": [measure(tp, 29500 + tp) for tp in args.tp],
    }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    for run in result["runs"]:
        for row in run["ranks"]:
            print(f"TP{run['tensor_parallel_size']} rank {row['rank']}: context {row['context_bytes'] / GIB:.3f} GiB, "
                  f"NCCL {row['nccl_bytes'] / GIB:.3f} GiB, cuBLAS {row['cublas_bytes'] / GIB:.3f} GiB, "
                  f"before snapshot {row['before_snapshot_gib']:.3f} GiB (NVML used)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
