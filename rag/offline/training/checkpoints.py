"""Resumable checkpoints of a training run in `output/checkpoint/`: the windows, the weights, the optimizer
and schedule, the data order and every random state, in safetensors and JSON (no pickle)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Progress:
    """Where a run stands; saved with every checkpoint and restored from it."""

    epoch_rng: tuple  # the data-order random state at the start of the current epoch
    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of the current epoch done
    losses: list[float] = field(default_factory=list)
    seconds_before: float = 0.0  # training time of the processes before this one (a resumed run)

    @classmethod
    def from_state(cls, state: dict) -> Progress:
        return cls(rng_state(state["epoch_rng"]), state["step"], state["epoch"], state["position"], state["losses"],
                   state["train_seconds"])


def save_checkpoint(ckpt: Path, model, optimizer, schedule, *, config: dict, command: str, progress: Progress,
                    train_seconds: float, mix: dict, extra_draw: dict | None, windows: int,
                    init_lineage: list[dict]) -> None:
    """A full checkpoint of the run at `progress`: what `train(resume=True)` needs to continue exactly."""
    import torch

    write_checkpoint(ckpt, model, optimizer, schedule, {
        "config": config, "command": command, "step": progress.step, "epoch": progress.epoch,
        "position": progress.position, "losses": progress.losses, "epoch_rng": progress.epoch_rng,
        "torch_rng": torch.get_rng_state().tolist(), "train_seconds": train_seconds, "mix": mix,
        "extra_draw": extra_draw, "windows": windows, "init_lineage": init_lineage,
    })


def rng_state(saved: list) -> tuple:
    """A `random.Random` state from its JSON form."""
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def write_items(ckpt: Path, items: list[dict]) -> None:
    """The run's windows, so a resumed run trains on exactly the same data without preparing it again."""
    import gzip

    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / "items.json.gz.tmp"
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(items, f, separators=(",", ":"))
    tmp.replace(ckpt / "items.json.gz")


def read_items(ckpt: Path) -> list[dict]:
    import gzip

    with gzip.open(ckpt / "items.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def write_checkpoint(ckpt: Path, model, optimizer, schedule, state: dict) -> None:
    """Weights (fp32), optimizer moments and random state in safetensors, the rest in JSON (no pickle). The
    tensors go to files named by their step; state.json, replaced last in one rename, names them, so a
    crash at any point leaves state.json naming a whole checkpoint (the previous one until the rename).
    Then the files no state names any more, and any a crash left half-written, are removed."""
    import torch
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"{i}.{name}": value.detach().cpu().contiguous()
               for i, slots in opt["state"].items() for name, value in slots.items() if torch.is_tensor(value)}
    files = {"model": f"model-{state['step']:06d}.safetensors", "optimizer": f"optimizer-{state['step']:06d}.safetensors"}
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, ckpt / f"{files['model']}.tmp")
    save_file(tensors, ckpt / f"{files['optimizer']}.tmp")
    for name in files.values():
        (ckpt / f"{name}.tmp").replace(ckpt / name)
    state = {**state, "files": files, "param_groups": opt["param_groups"],
             "schedule": {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}}
    (ckpt / "state.json.tmp").write_text(json.dumps(state), encoding="utf-8")
    (ckpt / "state.json.tmp").replace(ckpt / "state.json")
    remove_leftovers(ckpt, state)


def checkpoint_files(state: dict) -> dict[str, str]:
    """The tensor files a checkpoint's state names (a checkpoint written before they were named by step:
    model.safetensors and optimizer.safetensors)."""
    return state.get("files") or {"model": "model.safetensors", "optimizer": "optimizer.safetensors"}


def remove_leftovers(ckpt: Path, state: dict) -> None:
    """Remove what a checkpoint folder holds beside the checkpoint `state` names and the run's windows:
    older steps' tensors, and `.tmp` files a crash or kill left mid-write (each as large as the model)."""
    keep = {*checkpoint_files(state).values(), "state.json", "items.json.gz"}
    for path in ckpt.iterdir():
        if path.is_file() and path.name not in keep and (path.suffix == ".tmp" or path.name.endswith(".safetensors")):
            path.unlink(missing_ok=True)


def read_checkpoint_state(ckpt: Path) -> dict | None:
    path = ckpt / "state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_checkpoint(ckpt: Path, state: dict, model, optimizer, schedule) -> None:
    import torch
    from safetensors.torch import load_file

    files = checkpoint_files(state)
    remove_leftovers(ckpt, state)  # a kill mid-write left half a next checkpoint: as large as the model
    model.load_state_dict(load_file(ckpt / files["model"]))
    slots: dict[int, dict] = {}
    for key, value in load_file(ckpt / files["optimizer"]).items():
        i, name = key.split(".", 1)
        slots.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    schedule.load_state_dict({**state["schedule"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
