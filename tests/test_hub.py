"""Model folders: save → load round trip, strict keys, no pickles, Hub cache and revisions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from finally_cli.errors import CheckpointError
from finally_cli.models.hub import create_model, load_model, resolve_model, save_model


def _run(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    waveform = torch.randn(1, 1, 5000) * 0.1
    with torch.no_grad():
        return model(waveform)


def test_round_trip_local_folder_is_bit_identical(tmp_path: Path) -> None:
    model = create_model("tiny", seed=7)
    save_model(model, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "config.json",
        "model.safetensors",
        "README.md",
    }
    loaded = load_model(str(tmp_path / "m"), for_inference=False).eval()
    model.eval()
    assert torch.equal(_run(model), _run(loaded))


def test_missing_and_extra_keys_are_refused(tmp_path: Path, tiny_dir: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    removed = sorted(tensors)[0]
    broken = dict(tensors)
    broken.pop(removed)
    save_file(broken, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"missing keys {removed}"):
        load_model(str(folder))
    extra = dict(tensors)
    extra["surplus.weight"] = torch.zeros(1)
    save_file(extra, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys surplus.weight"):
        load_model(str(folder))


def test_pickle_checkpoints_are_never_loaded(tmp_path: Path, tiny_dir: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(str(folder))
    # A pickle renamed to .safetensors is not valid safetensors either.
    shutil.move(folder / "pytorch_model.bin", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_model(str(folder))


def test_unknown_model_name_lists_known_ones() -> None:
    with pytest.raises(CheckpointError, match="unknown model 'nope'.*finally-small"):
        resolve_model("nope")


def test_ssl_weights_from_hub_are_not_stored(tmp_path: Path) -> None:
    from dataclasses import replace

    config = create_model("tiny").config
    config = replace(config, ssl=replace(config.ssl, weights="hub", model_id=str(tmp_path / "w")))
    model = create_model(config)
    save_model(model, tmp_path / "m")
    keys = load_file(str(tmp_path / "m" / "model.safetensors")).keys()
    assert not any(k.startswith("ssl.") for k in keys)
    # The SSL weights come from a local folder named by the config (a Hub id in real use).
    model.ssl.model.save_pretrained(tmp_path / "w")
    loaded = load_model(str(tmp_path / "m"), offline=True, for_inference=False).eval()
    assert torch.equal(_run(model.eval()), _run(loaded))
    shutil.rmtree(tmp_path / "w")
    with pytest.raises(CheckpointError, match="SSL weights"):
        load_model(str(tmp_path / "m"), offline=True)


def _fake_hub_cache(cache: Path, repo_id: str, source: Path, commit: str, ref: str) -> None:
    """Lay out a Hugging Face cache entry the way huggingface_hub writes one."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


def test_hub_cache_offline_with_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    old, new = create_model("tiny", seed=1), create_model("tiny", seed=2)
    save_model(old, tmp_path / "old")
    save_model(new, tmp_path / "new")
    commit_old, commit_new = "a" * 40, "b" * 40
    _fake_hub_cache(cache, "acme/restorer", tmp_path / "old", commit_old, "v1")
    _fake_hub_cache(cache, "acme/restorer", tmp_path / "new", commit_new, "main")

    latest = load_model("acme/restorer", offline=True, for_inference=False).eval()
    pinned = load_model("acme/restorer", revision="v1", offline=True, for_inference=False).eval()
    inline = load_model(f"acme/restorer@{commit_old}", offline=True, for_inference=False).eval()
    assert torch.equal(_run(latest), _run(new.eval()))
    assert torch.equal(_run(pinned), _run(old.eval()))
    assert torch.equal(_run(inline), _run(old))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        load_model("acme/other")


def test_registry_folder_without_weights_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "weights" / "finally-small"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "finally-small"}))
    monkeypatch.setenv("FINALLY_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(CheckpointError, match="no trained weights yet"):
        load_model("finally-small")
