"""Hostile inputs (issue 18): each row is one way a file could be lost, mislabelled or
half-written, or a failure could be more than one clear line. Other wings add their rows."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from finally_cli.errors import CheckpointError, ConfigError, FinallyError
from finally_cli.models.hub import create_model, load_model, read_config, save_model
from tests.conftest import invoke, speechlike, write


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text.strip(), text
    return text


# -- model folders: config.json (item 9) and model.safetensors (item 8) ----------------------
def _edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = json.loads((folder / "config.json").read_text())
        change(data)
        (folder / "config.json").write_text(json.dumps(data))

    return apply


def _set(path: str, value: object) -> Callable[[Path], None]:
    def change(data: dict) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            data = data[key]
        data[leaf] = value

    return _edit_config(change)


def _edit_weights(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        tensors = load_file(str(folder / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "model.safetensors"))

    return apply


def _poison(key: str, value: float) -> Callable[[Path], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value

    return _edit_weights(change)


def _retype(key: str, dtype: torch.dtype) -> Callable[[Path], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = tensors[key].to(dtype)

    return _edit_weights(change)


def _raw_config(data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / "config.json").write_bytes(data)


WEIGHT = "spectral_unet.unet.conv_in.bias"

# (id, how the tiny model folder is broken, a fragment of the one-line error)
MODEL_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("nan-weight", _poison(WEIGHT, math.nan), f"{WEIGHT} holds non-finite values"),
    ("inf-weight", _poison(WEIGHT, math.inf), f"{WEIGHT} holds non-finite values"),
    ("int-weight", _retype(WEIGHT, torch.int32), f"{WEIGHT} has dtype int32"),
    ("bool-weight", _retype(WEIGHT, torch.bool), f"{WEIGHT} has dtype bool"),
    ("width-string", _set("wave_unet.block_widths", ["2", 4]), "wave_unet.block_widths"),
    ("width-float", _set("wave_unet.block_widths", [2.5, 4]), "wave_unet.block_widths"),
    ("depth-float", _set("wave_unet.block_depth", 1.0), "wave_unet.block_depth"),
    ("channels-string", _set("fusion_channels", "16"), "fusion_channels"),
    ("enabled-string", _set("upsample_wave_unet.enabled", "no"), "upsample_wave_unet.enabled"),
    ("kernel-negative", _set("upsampler.kernel_sizes", [16, 16, -4, 4]), "upsampler.kernel_sizes"),
    (
        "resblock-kernel-zero",
        _set("upsampler.resblock_kernel_sizes", [0]),
        "upsampler.resblock_kernel_sizes",
    ),
    (
        "dilation-negative",
        _set("upsampler.resblock_dilations", [1, -3]),
        "upsampler.resblock_dilations",
    ),
    ("width-huge", _set("wave_unet.block_widths", [100000, 4]), "wave_unet.block_widths"),
    ("depth-huge", _set("wave_unet.block_depth", 1000000), "wave_unet.block_depth"),
    ("ssl-layers-huge", _set("ssl.arch.num_hidden_layers", 1000000), "ssl.arch.num_hidden_layers"),
    ("ssl-hidden-string", _set("ssl.arch.hidden_size", "32"), "ssl.arch.hidden_size"),
    ("compression-nan", _set("spectral_restorer.compression", math.nan), "compression"),
    # Each field within its range, the whole over the cap: refused before any allocation.
    (
        "too-many-parameters",
        _set("wave_unet.block_widths", [8192, 8192, 8192, 8192]),
        "parameters, more than the cap",
    ),
    ("not-utf8", _raw_config(b'{"name": "\xff\xfe"}'), "not UTF-8"),
    ("not-json", _raw_config(b'{"name": '), "unreadable config"),
    ("not-a-mapping", _raw_config(b"[1, 2]"), "expected a mapping"),
]


@pytest.mark.parametrize(
    "breaks, message", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_hostile_model_folder_is_refused_in_one_line(
    tmp_path: Path, breaks: Callable[[Path], None], message: str
) -> None:
    folder = save_model(create_model("tiny", seed=0), tmp_path / "model")
    breaks(folder)
    with pytest.raises(CheckpointError) as caught:
        load_model(str(folder))
    assert message in one_line(caught.value)
    assert str(folder) in str(caught.value)


def test_a_hostile_model_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    folder = save_model(create_model("tiny", seed=0), tmp_path / "model")
    _poison(WEIGHT, math.nan)(folder)
    noisy = write(tmp_path / "in.wav", speechlike(0.5, 16000), 16000)
    out = tmp_path / "out.wav"
    result = invoke("enhance", str(noisy), "-o", str(out), "--model", str(folder))
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "non-finite" in result.stderr and not out.exists()


def test_config_values_are_checked_in_python_too() -> None:
    from finally_cli.models.config import UNetConfig

    with pytest.raises(ConfigError, match="block_depth"):
        UNetConfig(block_depth=True)
    assert UNetConfig(block_widths=[2, 4]).block_widths == (2, 4)  # lists become tuples


def test_every_preset_is_within_the_parameter_cap() -> None:
    from finally_cli.models.config import MAX_PARAMETERS, PRESETS, preset
    from finally_cli.models.hub import parameter_count

    counts = {name: parameter_count(preset(name)) for name in PRESETS}
    assert all(0 < n <= MAX_PARAMETERS for n in counts.values()), counts
    assert counts["tiny"] == sum(p.numel() for p in create_model("tiny").parameters())


def test_shipped_configs_still_read(tmp_path: Path) -> None:
    weights = Path(__file__).resolve().parents[1] / "weights"
    for folder in sorted(p for p in weights.iterdir() if (p / "config.json").is_file()):
        read_config(folder)


# -- pretrained SSL models load safetensors only (item 10) -----------------------------------
@pytest.fixture(scope="module")
def pickled_wavlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformers WavLM folder holding only a pickle (pytorch_model.bin)."""
    from transformers import WavLMConfig, WavLMModel

    from finally_cli.models.config import WAVLM_TINY_ARCH

    folder = tmp_path_factory.mktemp("pickled-wavlm")
    model = WavLMModel(WavLMConfig(**WAVLM_TINY_ARCH))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def _load_ssl_branch(folder: Path) -> None:
    from dataclasses import replace

    from finally_cli.models.hub import load_ssl_weights

    config = create_model("tiny").config
    config = replace(config, ssl=replace(config.ssl, model_id=str(folder), weights="hub"))
    load_ssl_weights(create_model(config))


def _load_extractor(folder: Path) -> None:
    from finally_cli.probing.extractors import SSLFeatures

    SSLFeatures(str(folder))


def _ssl_stats(folder: Path) -> None:
    result = invoke(
        "train", "ssl-stats", "--ssl", str(folder), "--clean", str(folder),
        "-o", str(folder / "stats.safetensors"), "--device", "cpu",
    )  # fmt: skip
    if result.exit_code != 0:
        raise ConfigError(result.stderr)


PICKLE_CASES: list[tuple[str, Callable[[Path], None]]] = [
    ("ssl.model_id", _load_ssl_branch),
    ("--extractor FOLDER:conv", _load_extractor),
    ("train ssl-stats --ssl FOLDER", _ssl_stats),
]


@pytest.mark.parametrize("load", [c[1] for c in PICKLE_CASES], ids=[c[0] for c in PICKLE_CASES])
def test_pretrained_pickles_are_never_loaded(
    pickled_wavlm: Path, load: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    unpickled = []

    def refuse(*args: object, **kwargs: object) -> None:
        unpickled.append(args)
        raise RuntimeError("torch.load was called on a pickle")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(FinallyError) as caught:
        load(pickled_wavlm)
    one_line(caught.value)
    assert not unpickled


# -- training run folders: kills, corrupt checkpoints, NaN, reused folders (item 7) ----------
TRAIN = ["--config", "tiny/stage1", "--set", "steps=4", "--set", "checkpoint_every=2",
         "--set", "log_every=1", "--set", "keep_checkpoints=3"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A 4-step tiny run (checkpoints at steps 2 and 4, metrics at every step) and its args."""
    base = tmp_path_factory.mktemp("train")
    clean = base / "clean"
    clean.mkdir()
    for i in range(2):
        write(clean / f"spk{i}.wav", speechlike(2.0, 16000, seed=i), 16000)
    args = [*TRAIN, "--set", f"data.clean=[{clean}]", "--quiet"]
    result = invoke("train", *args, "--run-dir", str(base / "run"))
    assert result.exit_code == 0, result.output
    return base / "run", args


def _steps(run: Path, name: str = "metrics.jsonl") -> list[int]:
    return [json.loads(line)["step"] for line in (run / name).read_text().splitlines()]


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def _truncate_newest(run: Path) -> None:
    weights = _ckpt(run, 4) / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _garble_newest_state(run: Path) -> None:
    (_ckpt(run, 4) / "state.json").write_text('{"step": 4, "rng"')


def _nan_in_newest(run: Path) -> None:
    path = _ckpt(run, 4) / "generator.safetensors"
    tensors = load_file(str(path))
    tensors[WEIGHT].view(-1)[0] = math.nan
    save_file(tensors, str(path))


def _tmp_left_by_kill(run: Path) -> None:
    # A kill between writing step 6's files and the rename leaves its `.tmp` folder.
    shutil.copytree(_ckpt(run, 4), run / "checkpoints" / "step_00000006.tmp")


def _lost_newest(run: Path) -> None:
    # Killed after logging steps 3-4 but before checkpoint 4 was renamed into place.
    shutil.rmtree(_ckpt(run, 4))


def _all_unreadable(run: Path) -> None:
    for step in (2, 4):
        (_ckpt(run, step) / "generator.safetensors").write_bytes(b"\0" * 10)


def _killed_before_any_checkpoint(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss_g": 1.0}\n{"step": 2, "lo')


def _nothing(run: Path) -> None:
    pass


def _logged_twice(run: Path) -> None:
    # What resumes did before: steps 3-4 logged by a killed run, then again by its resume.
    rows = (run / "metrics.jsonl").read_text().splitlines()
    stale = [json.dumps({**json.loads(row), "loss_g": -1.0}) for row in rows[2:]]
    (run / "metrics.jsonl").write_text("\n".join(rows[:2] + stale + rows[2:]) + "\n")


def _last_rows_kept(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(row["loss_g"] != -1.0 for row in rows)


@dataclasses.dataclass
class RunCase:
    """Damage done to a finished run, the `finally train` flags that follow, what must hold."""

    damage: Callable[[Path], None]
    flags: list[str]
    exit_code: int = 0
    message: str = ""  # in the one-line error, or in the log when exit_code is 0
    metrics: list[int] | None = None  # steps in metrics.jsonl afterwards
    check: Callable[[Path], None] | None = None


def _config_kept(run: Path) -> None:
    assert json.loads((run / "config.json").read_text())["optim"]["lr"] != 0.123


def _user_file_kept(run: Path) -> None:
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "best-takes").is_dir()
    assert _steps(run) == [1, 2, 3, 4]


RUN_CASES: dict[str, RunCase] = {
    "truncated-newest-checkpoint": RunCase(
        _truncate_newest, ["--resume"], message="resuming from step_00000002",
        metrics=[1, 2, 3, 4],
    ),
    "garbled-newest-state": RunCase(
        _garble_newest_state, ["--resume"], message="resuming from step_00000002",
        metrics=[1, 2, 3, 4],
    ),
    "nan-in-newest-checkpoint": RunCase(
        _nan_in_newest, ["--resume"], message="non-finite", metrics=[1, 2, 3, 4]
    ),
    "tmp-folder-left-by-kill": RunCase(
        _tmp_left_by_kill, ["--resume"], metrics=[1, 2, 3, 4],
        check=lambda run: not (run / "checkpoints" / "step_00000006.tmp").exists(),
    ),
    "resume-after-lost-checkpoint-no-duplicate-steps": RunCase(
        _lost_newest, ["--resume"], metrics=[1, 2, 3, 4]
    ),
    "steps-logged-twice-by-an-older-resume": RunCase(
        _logged_twice, ["--resume"], metrics=[1, 2, 3, 4], check=_last_rows_kept
    ),
    "every-checkpoint-unreadable": RunCase(
        _all_unreadable, ["--resume"], exit_code=2, message="no readable checkpoint"
    ),
    "resume-before-any-checkpoint": RunCase(
        _killed_before_any_checkpoint, ["--resume"], message="starting at step 0",
        metrics=[1, 2, 3, 4],
    ),
    "new-run-in-killed-run-folder": RunCase(
        _killed_before_any_checkpoint, ["--set", "optim.lr=0.123"], exit_code=2,
        message="--overwrite", check=_config_kept,
    ),
    "new-run-in-finished-run-folder": RunCase(
        _nothing, ["--set", "optim.lr=0.123"], exit_code=2, message="--resume",
        metrics=[1, 2, 3, 4], check=_config_kept,
    ),
    "overwrite-keeps-what-the-run-did-not-write": RunCase(
        lambda run: ((run / "notes.txt").write_text("mine"), (run / "best-takes").mkdir()),
        ["--overwrite"], metrics=[1, 2, 3, 4], check=_user_file_kept,
    ),
    "overwrite-and-resume": RunCase(
        _nothing, ["--overwrite", "--resume"], exit_code=2, message="not both"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", RUN_CASES.values(), ids=RUN_CASES.keys())
def test_hostile_run_folder(
    tmp_path: Path,
    finished_run: tuple[Path, list[str]],
    case: RunCase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, args = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    case.damage(run)
    result = invoke("train", *args, *case.flags, "--run-dir", str(run))
    assert result.exit_code == case.exit_code, result.output + repr(result.exception)
    if case.exit_code:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert case.message in result.stderr
    else:
        assert case.message in caplog.text
        assert json.loads(_ckpt(run, 4).joinpath("state.json").read_text())["step"] == 4
    if case.metrics is not None:
        assert _steps(run) == case.metrics
    if case.check is not None:
        assert case.check(run) is not False


@pytest.mark.parametrize("key", ["grad_norm_g", "loss_d"])  # loss_g: test_training
def test_any_non_finite_loss_stops_training(
    tmp_path: Path, finished_run: tuple[Path, list[str]], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finally_cli.training.trainer import Trainer

    real_step = Trainer.train_step

    def poisoned(self: Trainer, batches: list) -> dict[str, float]:
        logs = real_step(self, batches)
        return {**logs, key: math.inf} if self.step == 2 else logs

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    _, args = finished_run
    result = invoke("train", *args, "--run-dir", str(tmp_path / "run"))
    assert result.exit_code != 0
    assert "non-finite loss at step 3" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not _ckpt(tmp_path / "run", 4).exists()


def test_a_nan_weight_is_never_checkpointed(
    tmp_path: Path, finished_run: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finite losses, yet a weight went NaN in the update: the checkpoint is refused."""
    from finally_cli.training.trainer import Trainer

    real_step = Trainer.train_step

    def poisoned(self: Trainer, batches: list) -> dict[str, float]:
        logs = real_step(self, batches)
        if self.step == 3:
            with torch.no_grad():
                next(self.generator.parameters()).view(-1)[0] = math.nan
        return logs

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    _, args = finished_run
    result = invoke("train", *args, "--run-dir", str(tmp_path / "run"))
    assert result.exit_code != 0
    assert "non-finite" in result.stderr and "step 4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not _ckpt(tmp_path / "run", 4).exists() and _ckpt(tmp_path / "run", 2).is_dir()


def test_init_from_a_run_skips_its_unreadable_newest_checkpoint(
    tmp_path: Path, finished_run: tuple[Path, list[str]]
) -> None:
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import generator_config

    source, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    _truncate_newest(run)
    _, weights = generator_config(load_config("tiny/stage2", [f"init_from={run}"]))
    assert weights is not None and WEIGHT in weights


EXPORT_CASES: dict[str, tuple[Callable[[Path], None], list[str], int, str]] = {
    # (damage, flags, exit code, what the exported model card or the error says)
    "newest-unreadable": (_truncate_newest, [], 0, "2 steps"),
    "chosen-step-unreadable": (_truncate_newest, ["--step", "4"], 2, "unreadable"),
    "chosen-step-nan": (_nan_in_newest, ["--step", "4"], 2, "non-finite"),
}


@pytest.mark.parametrize(
    "damage, flags, exit_code, message", EXPORT_CASES.values(), ids=EXPORT_CASES.keys()
)
def test_export_of_a_damaged_run(
    tmp_path: Path,
    finished_run: tuple[Path, list[str]],
    damage: Callable[[Path], None],
    flags: list[str],
    exit_code: int,
    message: str,
) -> None:
    source, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    damage(run)
    result = invoke("train", "export", str(run), "-o", str(tmp_path / "model"), *flags)
    assert result.exit_code == exit_code, result.output + repr(result.exception)
    if exit_code:
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
        assert not (tmp_path / "model").exists()
    else:
        assert message in (tmp_path / "model" / "README.md").read_text()
        load_model(str(tmp_path / "model"))


def test_init_from_a_truncated_model_folder_is_one_line(tmp_path: Path) -> None:
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import generator_config

    folder = save_model(create_model("tiny", seed=0), tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="unreadable") as caught:
        generator_config(load_config("tiny/stage2", [f"init_from={folder}"]))
    one_line(caught.value)
