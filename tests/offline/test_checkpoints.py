"""A training checkpoint is whole at every moment: state.json names the step's tensor files and is replaced
last, so a kill mid-write leaves the previous checkpoint, and what the kill left half-written (files as
large as the model) is removed when the run resumes or writes its next checkpoint."""
import json

import torch

from rag.offline.training.checkpoints import load_checkpoint, read_checkpoint_state, write_checkpoint


def _run():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    return model, optimizer, schedule


def _state(step: int) -> dict:
    return {"step": step, "torch_rng": torch.get_rng_state().tolist()}


def test_each_checkpoint_names_its_files_and_removes_the_older_and_half_written_ones(tmp_path):
    model, optimizer, schedule = _run()
    write_checkpoint(tmp_path, model, optimizer, schedule, _state(3))
    (tmp_path / "model-000004.safetensors.tmp").write_bytes(b"half of the next checkpoint")  # a kill mid-write
    assert read_checkpoint_state(tmp_path)["files"]["model"] == "model-000003.safetensors"
    write_checkpoint(tmp_path, model, optimizer, schedule, _state(7))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-000007.safetensors", "optimizer-000007.safetensors",
                                                          "state.json"]


def test_a_resume_loads_the_named_step_and_removes_what_a_kill_left(tmp_path):
    model, optimizer, schedule = _run()
    write_checkpoint(tmp_path, model, optimizer, schedule, _state(5))
    leftover = tmp_path / "optimizer-000006.safetensors.tmp"
    leftover.write_bytes(b"x" * 1000)
    fresh = torch.nn.Linear(4, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_schedule = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1.0)
    load_checkpoint(tmp_path, read_checkpoint_state(tmp_path), fresh, fresh_optimizer, fresh_schedule)
    assert torch.equal(fresh.weight, model.weight) and not leftover.exists()


def test_a_checkpoint_written_before_the_files_were_named_still_resumes(tmp_path):
    """Runs checkpointed by earlier code (model.safetensors, optimizer.safetensors, no "files") go on."""
    model, optimizer, schedule = _run()
    write_checkpoint(tmp_path, model, optimizer, schedule, _state(2))
    state = read_checkpoint_state(tmp_path)
    for kind, name in state.pop("files").items():
        (tmp_path / name).rename(tmp_path / f"{kind}.safetensors")
    (tmp_path / "state.json").write_text(json.dumps(state))
    fresh = torch.nn.Linear(4, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_schedule = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1.0)
    load_checkpoint(tmp_path, state, fresh, fresh_optimizer, fresh_schedule)
    assert torch.equal(fresh.weight, model.weight)
    assert (tmp_path / "model.safetensors").exists()  # what the state names is kept
