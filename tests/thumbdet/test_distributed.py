"""Two CPU processes with gloo (as torchrun would start them) end with identical weights."""

from __future__ import annotations

import json
import socket

import torch
import torch.multiprocessing as mp

from tests.thumbdet.helpers import distributed_train_worker, write_tiny_coco
from thumbdet.checkpoints import load_checkpoint
from thumbdet.distributed import init_distributed
from thumbdet.training.config import TrainConfig
from thumbdet.training.trainer import train


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed("cpu")
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (
        0,
        1,
        False,
        True,
    )


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    images_dir, annotation_file = write_tiny_coco(tmp_path, num_images=6, size=(40, 48))
    common = dict(
        preset="tiny", train_images=str(images_dir), train_ann=str(annotation_file),
        val_images=str(images_dir), val_ann=str(annotation_file), batch_size=1, num_workers=0,
        short_side=[32], max_size=64, device="cpu", eval_every=1,
    )  # fmt: skip
    teacher = train(
        TrainConfig.from_dict(dict(output=str(tmp_path / "teacher"), epochs=1, **common))
    )
    output = tmp_path / "ddp"
    config = TrainConfig.from_dict(dict(
        output=str(output), epochs=2, mode="thumbdet", teacher=str(teacher), scale=2,
        stage1_epochs=1, max_steps_per_epoch=2, **common,
    ))  # fmt: skip
    # fork, like DataLoader workers (one thread each): no second import of torch and timm
    mp.start_processes(
        distributed_train_worker,
        args=(2, _free_port(), config.to_dict(), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    checkpoint = load_checkpoint(output / "checkpoint.pth")
    assert checkpoint["epoch"] == 2 and len(checkpoint["rng"]) == 2
    moved = [k for k, v in checkpoint["model"].items() if not torch.equal(v, rank0["model." + k])]
    assert moved == []  # rank 0's checkpoint holds the final weights
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch"]  # rank 0 wrote once
    assert records[0]["world_size"] == 2
    assert records[2]["val"] is not None and set(records[2]["val"]) >= {"AP", "AP50"}
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint.pth",
        "config.json",
        "image_check.json",  # the images rank 0 checked, for a later --resume
        "log.jsonl",
        "pretrained",  # model.safetensors + config.json of the final model, written once
    ]
