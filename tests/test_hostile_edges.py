"""Hostile edges (issue 18 items 12-14): a spike that would saturate a file, eval's partial
failures, and odd output paths and probe arguments; every failure one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import invoke, one_error_line, speechlike, write


# -- item 12: an isolated spike never sets the gain of the whole file ------------------------
def _spiked(seconds: float, rate: int, where: list[int], value: float = 1e6) -> np.ndarray:
    audio = speechlike(seconds, rate)[:, 0].astype(np.float64)
    audio[where] = value
    return audio


@pytest.mark.parametrize(
    "where", [[5000], [0], [15999], [8000, 8001], [3000, 9000, 13000]], ids=str
)
def test_a_spike_does_not_set_the_gain(where: list[int]) -> None:
    from finally_cli.audio.level import LevelMeter

    def gain(audio: np.ndarray) -> float:
        meter = LevelMeter(16000)
        for block in np.array_split(audio, 7):  # streamed in odd blocks
            meter.update(block)
        return meter.gain()

    clean = speechlike(1.0, 16000)[:, 0].astype(np.float64)
    assert gain(_spiked(1.0, 16000, where)) == pytest.approx(gain(clean), rel=0.15)


def test_a_loud_click_caps_the_gain_only_under_a_peak_ceiling() -> None:
    from finally_cli.audio.level import INPUT_LIMIT, PEAK_LIMIT, TARGET_DBFS, LevelMeter

    rate = 16000
    quiet = speechlike(2.0, rate)[:, 0].astype(np.float64)
    quiet *= 10 ** (-40 / 20) / np.sqrt(np.mean(quiet**2))
    quiet[rate] = 0.99  # one click: its 50 ms frame is not 40 dB above the speech around it
    meter = LevelMeter(rate)
    meter.update(quiet)
    assert meter.gain() == pytest.approx(PEAK_LIMIT / 0.99)  # the default ceiling holds
    free = meter.gain(None)
    assert free == pytest.approx(10 ** (TARGET_DBFS / 20) / meter.active_rms())
    assert 20 * np.log10(free / meter.gain()) > 12  # the speech goes to the target level
    # the engine clamps the gained input at INPUT_LIMIT under a ceiling; without one, above
    # the gained click (it belongs to the recording), but still far below an isolated spike
    assert meter.input_limit(meter.gain()) == INPUT_LIMIT
    assert meter.input_limit(free, None) > 0.99 * free > INPUT_LIMIT
    spiked = _spiked(1.0, rate, [5000])
    meter = LevelMeter(rate)
    meter.update(spiked)
    assert meter.input_limit(meter.gain(None), None) < 1e-3 * 1e6 * meter.gain(None)


def test_speech_onsets_and_short_files_are_not_spikes() -> None:
    from finally_cli.audio.level import LevelMeter

    rate = 16000
    word = speechlike(0.3, rate)[:, 0]
    for audio in (
        np.concatenate([np.zeros(rate), word, np.zeros(rate)]),  # one word in digital silence
        word[:1600],  # 100 ms: too short to call any frame isolated
    ):
        meter = LevelMeter(rate)
        meter.update(audio)
        assert meter.peak == pytest.approx(float(np.abs(audio).max()))


def test_one_huge_sample_does_not_clip_the_output(tmp_path: Path, tiny_dir: Path) -> None:
    noisy = write(tmp_path / "spike.wav", _spiked(1.0, 16000, [5000]), 16000, "FLOAT")
    out = tmp_path / "out.wav"
    result = invoke("enhance", str(noisy), "-o", str(out), "--model", str(tiny_dir),
                    "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    audio, _ = sf.read(str(out))
    clipped = np.mean(np.abs(audio) >= 0.999)
    assert clipped < 0.01, f"{clipped:.0%} of the output clipped"


# -- item 13: eval isolates each metric's failure and exits 1 when anything failed -----------
def _eval(*args: str):  # noqa: ANN201
    return invoke("eval", *args, "--workers", "1", "-q")


@pytest.fixture
def scored_sets(tmp_path: Path) -> tuple[Path, Path]:
    ref, system = tmp_path / "ref", tmp_path / "sys"
    ref.mkdir()
    system.mkdir()
    rng = np.random.default_rng(0)
    for name, seconds in (("long", 1.0), ("short", 0.2)):  # PESQ needs 0.25 s
        x = speechlike(seconds, 16000)[:, 0]
        write(ref / f"{name}.wav", x, 16000)
        write(system / f"{name}.wav", x + 0.01 * rng.standard_normal(x.size), 16000)
    return ref, system


def test_one_failing_metric_keeps_the_others(scored_sets: tuple[Path, Path], tmp_path: Path):
    ref, system = scored_sets
    table = tmp_path / "rows.csv"
    result = _eval(str(system), "--reference", str(ref), "--metrics", "pesq,sisdr,estoi",
                   "--csv", str(table))  # fmt: skip
    assert result.exit_code == 1, result.output
    import csv

    rows = {r["file"]: r for r in csv.DictReader(table.open())}
    assert rows["short"]["sisdr"] and rows["short"]["estoi"], rows["short"]
    assert rows["short"]["pesq"] in ("", "nan"), rows["short"]
    assert rows["long"]["pesq"] and rows["long"]["pesq"] != "nan"
    assert "pesq: needs at least 0.25 s" in rows["short"]["notes"]
    assert "b'" not in result.stderr and "sys/short: error: pesq" in result.stderr


def test_eval_exits_1_when_nothing_could_be_scored(tmp_path: Path) -> None:
    system = tmp_path / "sys"
    system.mkdir()
    (system / "broken.wav").write_bytes(b"RIFF garbage that no decoder reads")
    result = _eval(str(system), "--metrics", "dnsmos")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output


# -- item 14: odd output paths, model names and probe arguments ------------------------------
@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_symlink_at_the_output_needs_overwrite(tmp_path: Path, tiny_dir: Path, kind: str):
    noisy = write(tmp_path / "a.wav", speechlike(0.3, 16000), 16000)
    out = tmp_path / "out.wav"
    out.symlink_to(tmp_path / ("nowhere.wav" if kind == "dangling" else "out.wav"))
    result = invoke("enhance", str(noisy), "-o", str(out), "--model", str(tiny_dir),
                    "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code != 0
    assert "--overwrite" in one_error_line(result.stderr)
    assert out.is_symlink()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["enhance", "{a}", "--model", "~nouser-finally/x"], "~nouser-finally"),
        (["probe-features", "--generate", "tones", "--segment-seconds", "0"], "--segment-seconds"),
        (["probe-features", "--generate", "tones", "--segment-seconds", "-1"], "--segment-seconds"),
        (["probe-features", "--generate", "tones", "--groups", "0"], "--groups"),
        (["probe-features", "--generate", "tones", "--groups", "1"], "--groups"),
        (["probe-features", "--generate", "tones", "--per-group", "1"], "--per-group"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    noisy = write(tmp_path / "a.wav", speechlike(0.3, 16000), 16000)
    result = invoke(*[a.format(a=noisy) for a in args])
    assert result.exit_code in (1, 2), result.output
    assert fragment in one_error_line(result.stderr)


@pytest.mark.parametrize("failure", ["model", "input"])
def test_a_failed_enhance_leaves_no_new_folder(tmp_path: Path, tiny_dir: Path, failure: str):
    noisy = write(tmp_path / "a.wav", speechlike(0.3, 16000), 16000)
    if failure == "input":
        noisy = tmp_path / "broken.wav"
        noisy.write_bytes(b"RIFF garbage that no decoder reads")
    model = str(tmp_path / "no-such-model") if failure == "model" else str(tiny_dir)
    out = tmp_path / "new" / "deeper" / "out.wav"
    result = invoke("enhance", str(noisy), "-o", str(out), "--model", model,
                    "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code != 0
    one_error_line(result.stderr)
    assert not (tmp_path / "new").exists()


def test_a_failed_batch_leaves_no_new_folder(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "a.wav", speechlike(0.3, 16000), 16000)
    existing = tmp_path / "kept"
    existing.mkdir()  # made by the user, not by the tool: stays
    for out in (tmp_path / "new" / "out", existing):
        result = invoke("batch", str(inputs), "-o", str(out), "--model",
                        str(tmp_path / "no-model"), "--device", "cpu", "-q")  # fmt: skip
        assert result.exit_code != 0, result.output
    assert not (tmp_path / "new").exists()
    assert existing.is_dir()


def test_an_output_under_a_file_is_refused_before_work(tmp_path: Path, tiny_dir: Path):
    noisy = write(tmp_path / "a.wav", speechlike(0.3, 16000), 16000)
    (tmp_path / "plain").write_text("not a folder")
    result = invoke("enhance", str(noisy), "-o", str(tmp_path / "plain" / "x" / "out.wav"),
                    "--model", str(tiny_dir), "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code != 0
    assert "not a folder" in one_error_line(result.stderr)


@pytest.mark.parametrize("case", ["silent", "identical"])
def test_degenerate_probe_groups_are_refused(tmp_path: Path, case: str) -> None:
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(np.arange(8000) * 0.05)
    for index, name in enumerate(("aa", "bb", "cc")):
        (tmp_path / name).mkdir()
        for take in range(3):
            if case == "silent":  # bb is all digital silence
                audio = np.zeros(8000) if name == "bb" else rng.standard_normal(8000) * 0.1
            else:  # bb and cc hold the same clips
                audio = tone if name != "aa" else tone * np.hanning(8000) + 0.01 * take
            write(tmp_path / name / f"{take}.wav", audio * (index + 1 if case == "silent" else 1),
                  16000)  # fmt: skip
    result = invoke("probe-features", str(tmp_path), "--extractor", "logmel", "-q")
    assert result.exit_code != 0, result.output
    line = one_error_line(result.stderr)
    assert "bb" in line and ("cc" in line or case == "silent"), line
    assert "nan" not in result.stdout and "1.000" not in result.stdout
