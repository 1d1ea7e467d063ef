"""How long resuming a packed loader deep into an epoch takes.

    python benchmarks/index_build.py --docs 10000000 --files 100   # writes the corpus once
    python benchmarks/resume_far.py \
        /tmp/arrowloader-index-bench/docs10000000-files100-rows65536-len64

Plans epoch 0 of a PackedDataset (seq_len 32: about 10M blocks, 1.27M batches of 8), then
loads a state positioned at batch 1,000,000 into a fresh loader and times load_state_dict()
plus the first batch, and checks that batch against the blocks it must hold.
"""

from __future__ import annotations

import argparse
import time

import arrowloader
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="corpus (any source PackedDataset accepts)")
    parser.add_argument("--batch", type=int, default=1_000_000, help="batch to resume at")
    args = parser.parse_args()

    def make_loader() -> arrowloader.DataLoader:
        dataset = arrowloader.PackedDataset(args.source, seq_len=32, eos_token_id=0)
        generator = torch.Generator().manual_seed(0)
        return arrowloader.DataLoader(dataset, batch_size=8, shuffle=True, generator=generator)

    started = time.perf_counter()
    loader = make_loader()
    print(f"open + plan epoch 0: {time.perf_counter() - started:.2f} s, "
          f"{len(loader):,} batches per epoch")
    state = loader.state_dict()
    state["samples_consumed"] = args.batch * 8

    fresh = make_loader()
    started = time.perf_counter()
    fresh.load_state_dict(state)
    batch = next(iter(fresh))
    print(f"resume at batch {args.batch:,}: load_state_dict + first batch "
          f"{time.perf_counter() - started:.3f} s")

    dataset = loader.dataset
    order = dataset.block_order(0, 0, dataset.plan(0, 0).num_blocks)
    begin = args.batch * 8
    expected = dataset.assemble(order[begin : begin + 8].tolist(), epoch=0, seed=0)
    same = torch.equal(batch["input_ids"], expected["input_ids"])
    print(f"first resumed batch holds blocks {begin:,}..{begin + 7:,} of epoch 0: {same}")


if __name__ == "__main__":
    main()
