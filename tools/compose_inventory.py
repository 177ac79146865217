#!/usr/bin/env python3
"""Build a larger inventory from real captures: the GPUs of each capture, renumbered, every pair linked as seen.

Used for the 8 x H200 fixture while no 8-GPU machine is lent (issue 9):
    python tools/compose_inventory.py tests/fixtures/inventories/h200x4.json tests/fixtures/inventories/h200x4.json \
        --link-from tests/fixtures/inventories/h200x4.json > tests/fixtures/inventories/h200x8-composed.json
GPU records are copied from the captures (memory, reserved bytes, compute capability, NVLink links); UUIDs
and PCI ids of the second and later copies get a deterministic suffix; every pair gets the link record of
pair 0-1 of --link-from (on the captured H200 hosts every pair was alike: P2P and NVLink OK).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="+")
    parser.add_argument("--link-from", required=True)
    args = parser.parse_args()
    docs = [json.load(open(p)) for p in args.captures]
    link = next(lk for lk in json.load(open(args.link_from))["links"] if lk["gpus"] == [0, 1])
    out = copy.deepcopy(docs[0])
    gpus = []
    for copy_no, doc in enumerate(docs):
        for g in doc["gpus"]:
            g = copy.deepcopy(g)
            if copy_no:
                g["uuid"] = g["uuid"][:-4] + f"{copy_no:04x}"
                g["pci_bus_id"] = g["pci_bus_id"][:-4] + f"{copy_no + 0x10:02x}.0"
            g["index"] = len(gpus)
            gpus.append(g)
    out["gpus"] = gpus
    out["links"] = [{**link, "gpus": [a, b]} for a in range(len(gpus)) for b in range(a + 1, len(gpus))]
    out["environment"] = {"NVIDIA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus)))}
    out["hostname"] = "composed"
    out["source"] = "composed from " + ", ".join(args.captures)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
