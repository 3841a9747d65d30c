"""Data-parallel calibration (torchrun, 2 ranks, gloo over loopback) equals one process.

Run as a script by torchrun, this file is the worker: each rank calibrates on its share of the batches
(``batches[rank::world]``) and rank 0 writes the masks and pruned weights.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunekit.masks import Masks
from prunekit.oneshot import OneShotConfig, prune_oneshot

CONFIGS = {
    # float64: the ranks sum XXᵀ in another order; in float32 that moves weights by ~1e-6 (masks equal).
    "sparsegpt": OneShotConfig(method="sparsegpt", sparsity=0.5, blocksize=16, hessian_dtype="float64"),
    "wanda24": OneShotConfig(method="wanda", sparsity=None, pattern="2:4"),
}


def _model_and_batches():
    from test_oneshot_pipeline import batches, tiny_bert  # the torchrun workers import it from this folder

    return tiny_bert(), batches(n=6)


def _worker(out_dir: Path) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, data = _model_and_batches()
    for key, cfg in CONFIGS.items():
        result = prune_oneshot(model, data[rank::world], cfg)
        if rank == 0:
            result.masks.save(out_dir / f"{key}.masks")
            save_file(
                {k: v.contiguous() for k, v in result.model.state_dict().items()}, out_dir / f"{key}.st"
            )
    dist.barrier()
    dist.destroy_process_group()


def test_torchrun_two_ranks_gives_the_same_masks_and_weights_as_one_process(tmp_path):
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    _launch_two_ranks(tmp_path)
    model, data = _model_and_batches()
    for key, cfg in CONFIGS.items():
        single = prune_oneshot(model, data, cfg)
        assert Masks.load(tmp_path / f"{key}.masks") == single.masks
        weights = load_file(tmp_path / f"{key}.st")
        for name, value in single.model.state_dict().items():
            torch.testing.assert_close(weights[name], value, rtol=1e-6, atol=1e-7)


def _launch_two_ranks(out_dir: Path) -> None:
    """torchrun two gloo ranks over loopback; one relaunch if the launch itself fails.

    A CI run once saw rank 1 abort (SIGABRT) under heavy load and could not be reproduced in 15 stressed
    runs; the relaunch keeps that from hiding behind a red build, and both attempts' errors are reported
    in full if it happens twice. The masks and weights are compared afterwards either way.
    """
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    errors = []
    for _ in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
        cmd += [f"--master_port={_free_port()}", __file__, str(out_dir)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            return
        errors.append(proc.stderr)
    pytest.fail("torchrun failed twice:\n" + "\n---- second attempt ----\n".join(errors))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
