#!/usr/bin/env python3
"""The gpu_memory_utilization that gives a big GPU a smaller card's vLLM budget.

    python3 tools/gpu_e2e/fullshape_budget.py [--total BYTES] [--card "RTX 3090"] [--util 0.95]

vLLM's budget is `requested_memory = ceil(total x gpu_memory_utilization)` (v1/worker/utils.py
request_memory; the same in 0.25.1 and 0.33), with `total` from cudaMemGetInfo. To stand in for a
card with CUDA total T_card at utilization u_card on a GPU with CUDA total T, pick u so that
ceil(u x T) == ceil(u_card x T_card): then every byte vLLM hands out (weights, activation, graphs,
KV cache) comes from the same budget, and only the free memory above it differs.

Without --total, the total is read here with torch (`torch.cuda.mem_get_info`, device 0).
Prints one JSON object: total, card, card_total, target_bytes, utilization (the float to pass;
`repr` round-trips) and check (ceil(utilization x total), equal to target_bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def utilization_for(total: int, target: int) -> float:
    """The float u with ceil(u * total) == target, as vLLM computes it in double precision."""
    u = target / total
    for _ in range(64):  # float rounding can land one byte off either way: step to the right float
        got = math.ceil(total * u)
        if got == target:
            return u
        u = math.nextafter(u, math.inf if got < target else -math.inf)
    raise ValueError(f"no float utilization gives ceil(u x {total}) == {target}")


def main(argv: list[str] | None = None) -> int:
    from launcher.hardware.catalog import lookup

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--total", type=int, help="CUDA total of the big GPU in bytes (default: read with torch)")
    ap.add_argument("--card", default="RTX 3090", help="the card to stand in for (launcher's GPU table)")
    ap.add_argument("--util", type=float, default=0.95, help="its gpu_memory_utilization (default 0.95)")
    args = ap.parse_args(argv)
    total = args.total
    if total is None:
        import torch

        total = int(torch.cuda.mem_get_info(0)[1])
    card = lookup(args.card)
    target = math.ceil(card.cuda_total_bytes * args.util)
    u = utilization_for(total, target)
    print(json.dumps({"total": total, "card": card.key, "card_total": card.cuda_total_bytes, "card_util": args.util,
                      "target_bytes": target, "utilization": u, "check": math.ceil(total * u)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
