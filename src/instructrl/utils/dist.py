"""The processes of one training run: the one module that speaks to accelerate.

A stage started with ``run.num_processes=N`` (or under ``torchrun``/``accelerate launch``, which set
``WORLD_SIZE``) runs as N processes. Each process computes its share of every optimizer step's
micro-batches; accelerate wraps the model in DistributedDataParallel (gloo on CPU, NCCL on GPUs), which
averages the gradients over the processes, and every process then takes the same optimizer step. So that
N processes take the same decisions as one process with the same global batch, the loops here

* give each process the micro-batches ``group[rank::N]`` of every accumulation group (no overlap; a
  process left without one runs the group's first again with weight 0, so that the gradient exchange
  still happens and adds nothing);
* scale each process's loss by ``N`` (DDP averages; the loop's loss is a sum over the global batch);
* add up the logged sums (loss, tokens, validation NLL) over the processes;
* write metrics, checkpoints and the progress bar from the main process only, the others waiting.

A single process (no ``WORLD_SIZE``) never imports accelerate and gets the plain model back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from instructrl.config import ConfigError
from instructrl.utils.device import resolve_device


class Dist:
    """Rank, world size, device, and the few collective operations the loops need."""

    def __init__(self, accelerator: Any = None, device: torch.device | None = None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.device = accelerator.device if accelerator else (device or torch.device("cpu"))

    @classmethod
    def setup(cls, device_name: str, num_processes: int = 1) -> Dist:
        """This process's place in the run. ``num_processes`` > 1 must have been launched as that many
        processes (the CLI does it); a stage called in-process with it (``instructrl run``) is refused."""
        device = resolve_device(device_name)
        if not launched():
            if num_processes > 1:
                raise ConfigError(
                    f"run.num_processes={num_processes}: start the stage from the command line (instructrl sft|rm "
                    "... run.num_processes=N), under torchrun or under accelerate launch; instructrl run trains "
                    "in one process"
                )
            return cls(None, device)
        from accelerate import Accelerator

        dist = cls(Accelerator(cpu=device.type == "cpu"))
        if not dist.is_main:  # one voice: the main process narrates, the others speak only of trouble
            logging.getLogger("instructrl").setLevel(logging.WARNING)
        return dist

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as the loop trains it (DistributedDataParallel across processes)."""
        return self.accelerator.prepare_model(model) if self.world > 1 else model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model) if self.world > 1 else model

    def no_sync(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient exchange on all but the ``last`` backward of an accumulation group."""
        if self.world > 1 and not last:
            return self.accelerator.no_sync(model)
        return contextlib.nullcontext()

    def share(self, items: Sequence[Any]) -> list[Any]:
        """This process's share of ``items``: every ``world``-th one, starting at ``rank``."""
        return list(items[self.rank :: self.world])

    def sum(self, *values: float) -> list[float]:
        """Each value added up over the processes."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def main_writes(self) -> Iterator[bool]:
        """``with dist.main_writes() as main: if main: <write files>``: the main process writes, and no
        process goes on before the files are there."""
        try:
            yield self.is_main
        finally:
            self.barrier()

    def metrics(self, out_dir: Any, resume_step: int | None = None) -> Any:
        """The run's metrics log on the main process; a log that writes nothing on the others."""
        from instructrl.utils.metrics import MetricsLogger

        return MetricsLogger(out_dir, resume_step=resume_step) if self.is_main else _NoMetrics()

    def same_everywhere(self, value: Any) -> Any:
        """The main process's ``value`` on every process (e.g. a decision taken from its files)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


class _NoMetrics:
    def log(self, step: int, metrics: dict) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launched() -> bool:
    """Whether this process is one of several that a launcher started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch(num_processes: int, argv: Sequence[str], threads: int = 0) -> int:
    """Run ``instructrl <argv>`` as ``num_processes`` processes on this machine (torch's elastic launcher,
    the one ``accelerate launch`` uses); returns the exit code of the group."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={num_processes}",
        "--nnodes=1",
        f"--master_port={free_port()}",
        "-m",
        "instructrl.cli",
        *argv,
    ]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.call(command, env=env)
