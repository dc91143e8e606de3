"""`batch` under several processes: each rank reports its share, rank 0 merges one report."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

# How long a rank that has finished its files waits for the slowest one. Shares are dealt
# file by file, so they end within a few files of each other; a day covers any archive.
WAIT_FOR_OTHERS = datetime.timedelta(hours=24)


def shard_path(report: Path, rank: int) -> Path:
    """Rank `rank`'s rows, hidden beside the merged report until the merge."""
    return report.with_name(f".{report.name}.rank{rank}.json")


class ShardGroup:
    """A gloo process group over the launched ranks, used only to wait for each other and
    add up counts (on GPU nodes too: nothing here needs NCCL).

    Args:
        rank, world: this process's rank and the number of processes.
    """

    def __init__(self, rank: int, world: int) -> None:
        import torch.distributed as dist

        from finally_cli.errors import ConfigError

        self.rank, self.world = rank, world
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE={world} without MASTER_ADDR/MASTER_PORT: start several "
                "processes with `accelerate launch` or torchrun"
            )
        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=rank, world_size=world, timeout=WAIT_FOR_OTHERS)

    def totals(self, counts: dict[str, int]) -> dict[str, int]:
        """`counts` summed over all ranks; returns once every rank has called it."""
        import torch
        import torch.distributed as dist

        keys = sorted(counts)
        summed = torch.tensor([counts[k] for k in keys], dtype=torch.int64)
        dist.all_reduce(summed)
        return dict(zip(keys, summed.tolist()))

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def write_shard(report: Path, rank: int, rows: list[dict]) -> None:
    """This rank's rows beside the report. When a launch is terminated, another rank may
    remove the output folder it made (empty once its partial file is gone) between this
    rank's mkdir and its write: the folder is then made again (once the shard is in it, it is
    not empty and stays)."""
    path = shard_path(report, rank)
    tmp = path.with_name(path.name + ".part")
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_text(json.dumps(rows), encoding="utf-8")
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    os.replace(tmp, path)


def merge_shards(report: Path, world: int) -> list[dict]:
    """All ranks' rows (each input is in one rank's share); the shard files are removed."""
    rows: list[dict] = []
    for rank in range(world):
        rows += json.loads(shard_path(report, rank).read_text(encoding="utf-8"))
    for rank in range(world):
        shard_path(report, rank).unlink(missing_ok=True)
    return rows
