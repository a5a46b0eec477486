"""The one torch.distributed set-up of training and cohorts: device rule, group, barrier, timeout."""

import socket

import pytest
import torch
import torch.distributed as torch_dist

from volsr.inference import distributed


def test_a_rank_runs_on_its_own_gpu_and_a_cpu_stays_a_cpu(monkeypatch):
    assert distributed.rank_device("cpu", 3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.rank_device("auto", 3) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA"):
        distributed.rank_device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for asked in ("auto", "cuda", "cuda:5"):  # whatever index was asked: one GPU per rank
        assert distributed.rank_device(asked, 3) == torch.device("cuda", 3)


def test_torchrun_variables_name_the_rank(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.torchrun_environment()
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert distributed.torchrun_environment() and distributed.local_rank() == 5  # one machine
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_rank() == 1


def test_one_cpu_rank_joins_waits_and_leaves_a_group_it_made(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(name, value)
    cpu = torch.device("cpu")
    assert distributed.join_process_group(cpu)  # made here: the caller closes it
    try:
        assert torch_dist.get_backend() == "gloo"
        assert not distributed.join_process_group(cpu)  # an open group is used, not made again
        distributed.barrier(cpu)
    finally:
        distributed.leave_process_group()
    assert not torch_dist.is_initialized()
    assert distributed.BARRIER_TIMEOUT.total_seconds() >= 24 * 3600  # a cohort's slowest rank can take days
