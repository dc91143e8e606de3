"""Teacher targets: `recipes.teacher` writes a peer's outputs as targets; `data.pairs` mixes
them into training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.errors import ConfigError
from finally_cli.training.config import from_dict
from finally_cli.training.data import pair_dataset
from finally_cli.training.recipes import teacher
from tests.conftest import speechlike, write

runner = CliRunner()


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    for i in range(3):
        write(folder / f"s{i}.wav", speechlike(3.0, 48000, seed=i), 48000)
    return folder


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, clean_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("pool") / "pool"
    result = runner.invoke(
        app,
        ["train", "prepare-val", "--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]",
         "--set", "data.segment_seconds=1.0", "-o", str(out), "--count", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_teacher_targets_are_the_peers_output_file_by_file(
    tmp_path: Path, pool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are joined for the teacher and cut back: each target is the peer's output on its
    own noisy file, none shifted into another; a peer answering at 16 kHz is brought back to
    48 kHz; a second run keeps what is written."""
    calls = []

    def half_at_16k(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        import soxr

        calls.append(audio.size)
        return 0.5 * soxr.resample(audio, rate, 16000), 16000

    import soxr

    from finally_cli.evaluation import baselines

    monkeypatch.setitem(baselines.RUNNERS, "input", half_at_16k)
    out = tmp_path / "taught"
    assert teacher.teach(pool, out, "input", per_call=2, show=False) == (5, 0)
    assert len(calls) == 3  # 2 + 2 + 1 files
    for noisy_path in sorted((pool / "noisy").iterdir()):
        noisy, _ = sf.read(str(noisy_path))
        target, rate = sf.read(str(out / "clean" / noisy_path.name))
        assert rate == 48000 and target.size == noisy.size
        expected = 0.5 * soxr.resample(soxr.resample(noisy, 48000, 16000), 16000, 48000)
        inner = slice(300, -300)  # the resampler's edges
        error = target[inner] - expected[inner]
        assert np.sqrt(np.mean(error**2)) < 0.01 * np.sqrt(np.mean(expected[inner] ** 2))
        assert (out / "noisy" / noisy_path.name).resolve() == noisy_path.resolve()
    assert (out / "manifest.csv").read_text() == (pool / "manifest.csv").read_text()
    assert teacher.teach(pool, out, "input", show=False) == (0, 5)


def test_several_teachers_give_the_mean_of_their_outputs(
    tmp_path: Path, pool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two peers, one answering at 16 kHz and one a sample short: each target is the mean of
    their outputs on its file; the command line takes --teacher twice."""
    import soxr

    from finally_cli.evaluation import baselines

    def half_at_16k(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        return 0.5 * soxr.resample(audio, rate, 16000), 16000

    def inverted_short(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        return -0.25 * audio[:-1], rate

    monkeypatch.setitem(baselines.RUNNERS, "input", half_at_16k)
    monkeypatch.setitem(baselines.RUNNERS, "noisereduce", inverted_short)
    out = tmp_path / "mean"
    assert teacher.main([str(pool), "-o", str(out), "--teacher", "input",
                         "--teacher", "noisereduce", "--per-call", "2"]) == 0  # fmt: skip
    for noisy_path in sorted((pool / "noisy").iterdir()):
        noisy, _ = sf.read(str(noisy_path))
        target, _ = sf.read(str(out / "clean" / noisy_path.name))
        half = 0.5 * soxr.resample(soxr.resample(noisy, 48000, 16000), 16000, 48000)
        expected = (half - 0.25 * noisy) / 2
        inner = slice(300, -300)
        error = target[inner] - expected[inner]
        assert np.sqrt(np.mean(error**2)) < 0.01 * np.sqrt(np.mean(expected[inner] ** 2))
    assert (out / "manifest.csv").is_file()


def test_geometric_combination_keeps_what_both_keep_and_drops_what_either_drops() -> None:
    """Two peers keep the same tone and each leaves a different noise band: the geometric
    combination keeps the tone at its level and takes both bands > 20 dB under where the mean
    leaves them; one teacher is passed through; an unknown rule is refused."""
    from scipy import signal

    rate, rng = 48000, np.random.default_rng(0)
    t = np.arange(2 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    low = signal.sosfilt(signal.butter(6, [2500, 3500], "bandpass", fs=rate, output="sos"),
                         rng.standard_normal(t.size))  # fmt: skip
    high = signal.sosfilt(signal.butter(6, [7000, 9000], "bandpass", fs=rate, output="sos"),
                          rng.standard_normal(t.size))  # fmt: skip
    first, second = tone + 0.1 * low, tone + 0.1 * high
    mean = teacher.combine_outputs([first, second], "mean")
    geometric = teacher.combine_outputs([first, second], "geometric")
    assert geometric.shape == first.shape

    def level(x: np.ndarray, lo: float, hi: float) -> float:
        power = np.abs(np.fft.rfft(x[rate // 4 : -rate // 4])) ** 2
        freqs = np.fft.rfftfreq(x.size - rate // 2, 1 / rate)
        return 10 * np.log10(power[(freqs >= lo) & (freqs < hi)].sum())

    assert abs(level(geometric, 430, 450) - level(tone, 430, 450)) < 1.0
    for lo, hi in ((2700, 3300), (7500, 8500)):
        assert level(geometric, lo, hi) < level(mean, lo, hi) - 20
    assert np.array_equal(teacher.combine_outputs([first], "geometric"), first)
    with pytest.raises(ValueError, match="median"):
        teacher.combine_outputs([first, second], "median")


def test_a_resume_with_another_combination_is_refused(
    tmp_path: Path, pool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OUT/teacher.json records the teachers and the rule; a second run with another rule
    stops with one line and writes nothing."""
    from finally_cli.evaluation import baselines

    monkeypatch.setitem(baselines.RUNNERS, "input", lambda audio, rate: (audio, rate))
    monkeypatch.setitem(baselines.RUNNERS, "noisereduce", lambda audio, rate: (audio, rate))
    out = tmp_path / "geo"
    args = [str(pool), "-o", str(out), "--teacher", "input", "--teacher", "noisereduce"]
    assert teacher.main([*args, "--combine", "geometric"]) == 0
    written = {p.name: p.stat().st_mtime_ns for p in (out / "clean").iterdir()}
    with pytest.raises(SystemExit, match="geometric"):
        teacher.main(args)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clean").iterdir()} == written


def test_training_levels_a_clicked_item_as_the_engine_does(tmp_path: Path, clean_dir: Path) -> None:
    """A quiet pair with one full-scale click: under the tanh ceiling (the default) its gain
    stops at the click; for a model without one (peak_limit None, what the trainer passes
    for the spectral restorer) the speech goes to the engine's target level and the click is
    clamped where the engine clamps it."""
    from finally_cli.audio.level import INPUT_LIMIT, PEAK_LIMIT, TARGET_DBFS, LevelMeter

    folder = tmp_path / "pairs"
    rate = 48000
    (folder / "noisy").mkdir(parents=True)
    (folder / "clean").mkdir()
    quiet = speechlike(1.0, rate, seed=4)[:, 0].astype(np.float64)
    quiet *= 10 ** (-40 / 20) / np.sqrt(np.mean(quiet**2))
    quiet[quiet.size // 2] = 0.99
    write(folder / "noisy" / "p.wav", quiet[:, None], rate, "FLOAT")
    write(folder / "clean" / "p.wav", quiet[:, None], rate, "FLOAT")
    config = from_dict(
        {"model": "tiny", "data": {"clean": [str(clean_dir)], "segment_seconds": 2.0,
         "pairs": str(folder), "p_pairs": 1.0}}
    )  # fmt: skip
    capped, _, _ = pair_dataset(config, 2, 1, 128).pair(0)
    assert np.abs(capped).max() <= PEAK_LIMIT + 1e-6
    free, target, _ = pair_dataset(config, 2, 1, 128, peak_limit=None).pair(0)
    meter = LevelMeter(rate)
    meter.update(target)
    assert 20 * np.log10(meter.active_rms()) == pytest.approx(TARGET_DBFS, abs=0.5)
    # the click belongs to the recording (not an isolated spike): gained, not clamped
    assert np.abs(free).max() > INPUT_LIMIT
    assert np.abs(free).max() == pytest.approx(0.99 * np.abs(target).max() / np.abs(quiet).max())


def test_data_pairs_mix_fixed_pairs_into_the_stream(tmp_path: Path, clean_dir: Path) -> None:
    """With data.p_pairs = 1 every item is a segment of one of the fixed pairs, input and target
    from the same frames with the same gain; with 0.5 about half are; a bad folder is one
    ConfigError."""
    folder = tmp_path / "pairs"
    rate, seconds = 48000, 1.5
    (folder / "noisy").mkdir(parents=True)
    (folder / "clean").mkdir()
    for i in range(2):
        noisy = speechlike(seconds, rate, seed=10 + i)[:, 0]
        write(folder / "noisy" / f"p{i}.wav", noisy[:, None], rate)
        write(folder / "clean" / f"p{i}.wav", (0.25 * noisy)[:, None], rate)

    def config(p: float) -> object:
        return from_dict(
            {"model": "tiny", "data": {"clean": [str(clean_dir)], "segment_seconds": 0.5,
             "pairs": str(folder), "p_pairs": p}}
        )  # fmt: skip

    dataset = pair_dataset(config(1.0), 20, 1, 128)
    for index in range(6):
        noisy48, target48, applied = dataset.pair(index)
        assert applied == ["pairs"]
        assert np.allclose(target48, 0.25 * noisy48, atol=1e-4)
        item = dataset[index]
        assert item["noisy"].shape == item["clean"].shape == (1, 8064)
    mixed = pair_dataset(config(0.5), 200, 1, 128)
    share = np.mean([mixed.pair(i)[2] == ["pairs"] for i in range(200)])
    assert 0.35 < share < 0.65
    # a list of folders pools their pairs: items come from both (targets 0.25× and 0.5×)
    other = tmp_path / "pairs2"
    (other / "noisy").mkdir(parents=True)
    (other / "clean").mkdir()
    noisy = speechlike(seconds, rate, seed=20)[:, 0]
    write(other / "noisy" / "q.wav", noisy[:, None], rate)
    write(other / "clean" / "q.wav", (0.5 * noisy)[:, None], rate)
    pooled = pair_dataset(
        from_dict(
            {
                "model": "tiny",
                "data": {
                    "clean": [str(clean_dir)],
                    "segment_seconds": 0.5,
                    "pairs": [str(folder), str(other)],
                    "p_pairs": 1.0,
                },
            }
        ),  # fmt: skip
        40,
        1,
        128,
    )
    ratios = set()
    for index in range(40):
        noisy48, target48, _ = pooled.pair(index)
        loud = np.abs(noisy48) > 0.01
        ratios.add(round(float(np.median(target48[loud] / noisy48[loud])), 2))
    assert ratios == {0.25, 0.5}
    # data.clean_highpass_hz reaches the teacher's targets too, not the inputs
    t = np.arange(int(rate * seconds)) / rate
    rumble = 0.3 * np.sin(2 * np.pi * 15 * t)
    for i in range(2):
        write(
            folder / "clean" / f"p{i}.wav",
            (0.2 * np.sin(2 * np.pi * 300 * t) + rumble)[:, None],
            rate,
        )
        write(folder / "noisy" / f"p{i}.wav", rumble[:, None], rate)
    config_cut = from_dict(
        {"model": "tiny", "data": {"clean": [str(clean_dir)], "segment_seconds": 0.5,
         "pairs": str(folder), "p_pairs": 1.0, "clean_highpass_hz": 50.0}}
    )  # fmt: skip
    noisy48, target48, _ = pair_dataset(config_cut, 20, 1, 128).pair(0)
    spectrum = np.abs(np.fft.rfft(target48))
    freqs = np.fft.rfftfreq(target48.size, 1 / rate)
    low, voice = spectrum[freqs < 25].max(), spectrum[np.abs(freqs - 300) < 5].max()
    assert low < 0.05 * voice  # the teacher's rumble is gone from its target...
    assert np.abs(np.fft.rfft(noisy48))[freqs < 25].max() > 0.5 * voice  # ...and stays in the input
    with pytest.raises(ConfigError, match="needs data.pairs"):
        from_dict({"data": {"p_pairs": 0.5}})
    with pytest.raises(ConfigError, match="data.p_pairs=2"):
        from_dict({"data": {"pairs": str(folder), "p_pairs": 2.0}})
    (folder / "clean" / "p1.wav").unlink()
    with pytest.raises(ConfigError, match="p1.wav is missing"):
        pair_dataset(config(1.0), 20, 1, 128)


def test_teacher_command_line_refuses_a_folder_that_is_not_a_pool(tmp_path: Path) -> None:
    assert teacher.main([str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
