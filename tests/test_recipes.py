"""Data recipes: the offline set splits by language; the condition test set is seeded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.training.recipes import conditions, offline
from tests.conftest import speechlike


def fake_tuxpaint(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i, lang in enumerate(["", "_fr", "_ru", "_el", "_lt", "_es"]):
        for j in range(2):
            path = root / "animals" / f"cat{j}_desc{lang}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), speechlike(1.5, 44100, seed=i * 10 + j), 44100)
    for j in range(3):
        sf.write(str(root / "animals" / f"cat{j}.ogg"), rng.standard_normal(22050) * 0.1, 44100)


def test_offline_recipe_splits_by_language(tmp_path: Path) -> None:
    fake_tuxpaint(tmp_path / "stamps")
    summary = offline.build(
        tmp_path / "out", tmp_path / "stamps", noises=4, noise_seconds=2.0, rooms=3, more=False
    )
    assert summary["speech"]["test"] == {"el": 2}
    assert summary["speech"]["validation"] == {"lt": 2}
    assert summary["speech"]["train"] == {"en": 2, "fr": 2, "ru": 2, "es": 2}
    assert summary["tuxpaint_effects"] == 3
    test_names = {p.name for p in (tmp_path / "out" / "clean" / "test").rglob("*.ogg")}
    train_names = {p.name for p in (tmp_path / "out" / "clean" / "train").rglob("*.ogg")}
    assert test_names and not test_names & train_names
    assert len(list((tmp_path / "out" / "noise" / "synthetic").glob("*.flac"))) == 4
    assert len(list((tmp_path / "out" / "rooms").glob("*.flac"))) == 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert "GPL-2+" in (tmp_path / "out" / "README.md").read_text()


def test_more_sources_split_by_voice_and_leave_speech_out_of_noise(tmp_path: Path) -> None:
    """ktuberling: lt → validation, el (the test language) never used; Fish Fillets: nl →
    validation, effects and lines over music left out; Asterisk: ru → validation; noise beds:
    30 s each, every package by duration, speech folders skipped."""
    import shutil
    import subprocess

    from finally_cli.training.recipes import sources

    words = tmp_path / "ktuberling"
    for language in ("ca", "lt", "el"):
        (words / language).mkdir(parents=True)
        sf.write(str(words / language / "hat.ogg"), speechlike(0.8, 44100, seed=1), 44100)
    out = tmp_path / "out"
    assert sources.collect_ktuberling(out, words) == {"train": 1, "validation": 1}
    assert not list(out.rglob("*ktuberling_el*"))

    package = tmp_path / "game"
    (package / "sfx").mkdir(parents=True)
    (package / "voices").mkdir()
    (package / "music").mkdir()
    rng = np.random.default_rng(0)
    sf.write(str(package / "sfx" / "boom.wav"), rng.standard_normal(48000) * 0.1, 48000)
    sf.write(str(package / "voices" / "hello.wav"), speechlike(1.0, 48000), 48000)
    sf.write(str(package / "music" / "song.ogg"), rng.standard_normal(70 * 22050) * 0.1, 22050)
    report = sources.build_noise_beds(out, rng, packages=(("game", str(package), "GPL"),))
    assert report[0]["files"] == 2  # the voice folder is not noise
    beds = sorted((out / "noise" / "game__game").glob("*.flac"))
    assert len(beds) == report[0]["beds"] == 3  # 71 s + gaps: two full beds and the rest
    assert all(sf.info(str(b)).samplerate == 48000 for b in beds)
    assert sf.info(str(beds[0])).duration == 30.0

    lines = tmp_path / "fillets"
    for folder in ("city/cs", "city/nl", "share/borejokes/en", "viking1/cs"):
        (lines / folder).mkdir(parents=True)
    for name in ("city/cs/vit-m-hlava.ogg", "city/nl/vit-m-hlava.ogg",
                 "share/borejokes/en/ob-v-jit1.ogg", "viking1/cs/d1-1-hudba2.ogg",
                 "city/bubbles.ogg"):  # fmt: skip
        sf.write(str(lines / name), speechlike(0.8, 22050, seed=2), 22050)
    assert sources.collect_fillets(out, lines) == {"train": 2, "validation": 1}
    assert (out / "clean" / "train" / "fillets_en" / "share__borejokes__ob-v-jit1.ogg").exists()
    assert (out / "clean" / "validation" / "fillets_nl" / "city__vit-m-hlava.ogg").exists()
    assert not list(out.rglob("*hudba*")) and not list(out.rglob("*bubbles*"))

    if shutil.which("ffmpeg") is None:
        return
    prompts = tmp_path / "asterisk"
    for voice in ("en_US_f_Allison", "ru_RU_f_Svetlana"):
        (prompts / voice).mkdir(parents=True)
        wav = tmp_path / f"{voice}.wav"
        sf.write(str(wav), speechlike(1.0, 16000), 16000)
        subprocess.run(
            ["ffmpeg", "-v", "quiet", "-i", str(wav), "-c:a", "g722", "-f", "g722",
             str(prompts / voice / "hello.g722")],
            check=True,
        )  # fmt: skip
    assert sources.collect_asterisk(out, prompts) == {"train": 1, "validation": 1}
    decoded = next((out / "clean" / "validation").rglob("*.flac"))
    assert sf.info(str(decoded)).samplerate == 16000


def test_condition_test_set_is_seeded_and_complete(tmp_path: Path) -> None:
    fake_tuxpaint(tmp_path / "stamps")
    offline.build(
        tmp_path / "out", tmp_path / "stamps", noises=4, noise_seconds=2.0, rooms=2, more=False
    )
    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(9):
        sf.write(str(clean / f"{i}.wav"), speechlike(1.5, 44100, seed=i), 44100)
    for name in ("a", "b"):
        conditions.build(
            clean,
            tmp_path / "out" / "noise",
            tmp_path / "out" / "rooms",
            tmp_path / name,
            per_condition=1,
            seconds=1.2,
        )
    rows = list(csv.DictReader((tmp_path / "a" / "manifest.csv").open()))
    assert [r["condition"] for r in rows] == list(conditions.CONDITIONS)
    for row in rows:
        a, _ = sf.read(str(tmp_path / "a" / "noisy" / row["file"]))
        b, _ = sf.read(str(tmp_path / "b" / "noisy" / row["file"]))
        assert np.array_equal(a, b)
        assert (tmp_path / "a" / "clean" / row["file"]).is_file()


def test_mp3_24k_is_aligned_and_low_rate() -> None:
    from finally_cli.evaluation.align import find_lag

    x = np.convolve(np.random.default_rng(0).standard_normal(48000 * 3), np.ones(6) / 6, "same")
    y, kbps = conditions.mp3_24k(x * 0.1)
    assert y.shape == x.shape and abs(find_lag(x, y, 3000)) <= 1
    assert 20 <= kbps <= 28


def _recipe_calls(tmp_path: Path, recipe_name: str, env_extra: dict[str, str]) -> tuple[list, Path]:
    """Run a recipe with a stub `finally` that records its arguments; data steps skipped."""
    import os
    import subprocess
    import sys

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    stub = bin_dir / "finally"
    stub.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stub.chmod(0o755)
    work = tmp_path / "work"
    for folder in ("offline", "val"):  # the recipe skips the data steps when these exist
        (work / folder).mkdir(parents=True)
    for folder in ("pool", "pool-dfn3", "pool-avg", "pool-geo", "pool-b", "pool-geo-b"):  # and the
        # teacher pools when
        (work / folder).mkdir(parents=True)  # their manifests exist
        (work / folder / "manifest.csv").write_text("file,condition\n")
    (work / "clean-quiet").mkdir()  # and the quietened copy when it exists
    recipe = Path(__file__).parent.parent / "docs" / "recipes" / recipe_name
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env_extra}
    subprocess.run(["bash", str(recipe), str(work)], check=True, env=env, timeout=60)
    return [json.loads(line) for line in calls.read_text().splitlines()], work


def _stages(runs: list) -> list[tuple[int, str]]:
    from finally_cli.training.config import load_config

    stages = []
    for argv in runs:
        if argv[:2] == ["train", "export"]:
            continue
        name = argv[argv.index("--config") + 1]
        sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
        config = load_config(name, sets)  # raises on an unknown or invalid key
        if argv[0] == "train" and "--run-dir" in argv:
            stages.append((config.stage, Path(argv[argv.index("--run-dir") + 1]).name))
    return stages


def test_training_recipe_commands_are_valid_configs(tmp_path: Path) -> None:
    """Every `finally train` line of the shipped recipe loads as a stage config: the broad-mix
    phase (5 000 steps), stage1.yaml's noise-centred mix from it (1 000 steps, 0.4), the same
    mix on the quieter clean files (1 000 steps, 0.5), then that recipe with the deep filter
    grown to 160 bins (1 000 steps, 0.6), then 500 steps with teacher targets for half the items,
    blended half-way back (0.7), then 500 more with rumble-free clean targets and teacher targets
    for a quarter, blended half-way back (0.8), then 500 at 2e-4 on every voice with hiss-free
    targets and two teachers' mean, blended half-way back (0.9), then one more GRU layer and
    steady noise, 500 steps at 3e-4, blended half-way back with the mix-back stage on (0.10),
    then 250 steps with teacher targets for half the items, blended half-way back (0.11), then
    1 750 steps towards the geometric teacher with a backward GRU and L1 spectral errors,
    blended half-way back (0.12), then a bin refiner and 1 500 steps of that recipe, blended
    half-way back (0.14), then that recipe with a second teacher pool in two data seeds, 500
    steps each, averaged and blended half-way back (0.15), then grown to 384 recurrent units
    for 500 steps of that recipe, blended half-way back (0.16); the export is what
    weights/finally-small holds."""
    runs, work = _recipe_calls(tmp_path, "finally-small-cpu.sh", {})
    twelve = [(1, f"s{i}") for i in range(1, 12)] + [(1, "s12-1"), (1, "s12-2")]
    assert _stages(runs) == [*twelve, (1, "s13")]
    trains = [argv for argv in runs if "--run-dir" in argv]
    first, second, third, fourth, fifth, sixth, seventh, eighth, ninth, tenth, eleventh = trains[
        :11
    ]
    assert "steps=5000" in first and "degradation.p_mic=0.3" in first
    assert f"init_from={work / 's1'}" in second and "steps=1000" in second
    assert f"init_from={work / 's2'}" in third and "data.max_floor_db=-32" in third
    assert f"init_from={work / 's3'}" in fourth and "data.max_floor_db=-32" in fourth
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import generator_config

    sets = [fourth[i + 1] for i, arg in enumerate(fourth) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]  # s3 does not exist here
    grown, _ = generator_config(load_config("finally-small/stage1", sets))
    assert grown.spectral_restorer.df_bins == 160  # what weights/finally-small holds
    assert f"init_from={work / 's4-model'}" in fifth and "data.p_pairs=0.5" in fifth
    assert f"data.pairs={work / 'pool-dfn3'}" in fifth and "steps=500" in fifth
    assert f"init_from={work / 's5-model'}" in sixth and "data.p_pairs=0.25" in sixth
    sets = [sixth[i + 1] for i, arg in enumerate(sixth) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    assert load_config("finally-small/stage1", sets).data.clean_highpass_hz == 50
    assert f"init_from={work / 's6-model'}" in seventh and "data.p_pairs=0.25" in seventh
    sets = [seventh[i + 1] for i, arg in enumerate(seventh) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    config = load_config("finally-small/stage1", sets)
    assert config.data.targets == str(work / "clean-quiet") and config.data.max_floor_db == 0
    assert config.data.pairs == str(work / "pool-avg") and config.optim.lr == 2e-4
    assert f"init_from={work / 's7-model'}" in eighth and "optim.lr=3e-4" in eighth
    sets = [eighth[i + 1] for i, arg in enumerate(eighth) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    grown, _ = generator_config(load_config("finally-small/stage1", sets))
    assert grown.spectral_restorer.residual_gru_layers == 1  # what weights/finally-small holds
    assert load_config("finally-small/stage1", sets).degradation.p_stationary == 0.2
    assert f"init_from={work / 's8-model'}" in ninth and "data.p_pairs=0.5" in ninth
    assert "steps=250" in ninth
    sets = [ninth[i + 1] for i, arg in enumerate(ninth) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    grown, _ = generator_config(load_config("finally-small/stage1", sets))
    assert grown.spectral_restorer.residual_gru_layers == 1
    assert f"init_from={work / 's9-model'}" in tenth and "steps=1750" in tenth
    sets = [tenth[i + 1] for i, arg in enumerate(tenth) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    config = load_config("finally-small/stage1", sets)
    assert config.data.pairs == str(work / "pool-geo") and config.data.p_pairs == 0.5
    assert config.loss.spectral_distance == "l1" and config.checkpoint_every == 250
    grown, _ = generator_config(config)
    assert grown.spectral_restorer.residual_gru_layers == 1
    assert grown.spectral_restorer.backward_gru_hidden == 256
    assert f"init_from={work / 's10-model'}" in eleventh and "steps=1500" in eleventh
    sets = [eleventh[i + 1] for i, arg in enumerate(eleventh) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    config = load_config("finally-small/stage1", sets)
    assert config.data.pairs == str(work / "pool-geo") and config.loss.spectral_distance == "l1"
    grown, _ = generator_config(config)
    restorer = grown.spectral_restorer  # what weights/finally-small holds
    assert restorer.residual_gru_layers == 1 and restorer.backward_gru_hidden == 256
    assert restorer.bin_refiner_channels == 16
    for seed, twelfth in enumerate(trains[11:13], start=1):
        assert f"init_from={work / 's11-model'}" in twelfth and "steps=500" in twelfth
        sets = [twelfth[i + 1] for i, arg in enumerate(twelfth) if arg == "--set"]
        sets = [s for s in sets if not s.startswith("init_from=")]
        config = load_config("finally-small/stage1", sets)
        assert list(config.data.pairs) == [str(work / "pool-geo"), str(work / "pool-geo-b")]
        assert config.seed == seed and config.loss.spectral_distance == "l1"
        assert generator_config(config)[0].spectral_restorer.bin_refiner_channels == 16
    thirteenth = trains[13]
    assert f"init_from={work / 's12-model'}" in thirteenth and "steps=500" in thirteenth
    sets = [thirteenth[i + 1] for i, arg in enumerate(thirteenth) if arg == "--set"]
    sets = [s for s in sets if not s.startswith("init_from=")]
    config = load_config("finally-small/stage1", sets)
    assert list(config.data.pairs) == [str(work / "pool-geo"), str(work / "pool-geo-b")]
    restorer = generator_config(config)[0].spectral_restorer  # what weights/finally-small holds
    assert restorer.hidden == 384 and restorer.bin_refiner_channels == 16
    assert restorer.residual_gru_layers == 1 and restorer.backward_gru_hidden == 256
    exports = [argv for argv in runs if argv[:2] == ["train", "export"]]
    outs = ("s5-model", "s6-model", "s7-model", "s8-model", "s9-model", "s10-model")
    outs += ("s11-model", "s12-model", "finally-small")
    bases = ("s4-model", "s5-model", "s6-model", "s7-model", "s8-model", "s9-model")
    bases += ("s10-model", "s11-model", "s12-model")
    for export, out, base in zip(exports[-9:], outs, bases, strict=True):
        assert export[export.index("-o") + 1] == str(work / out)
        assert export[export.index("--blend-from") + 1] == str(work / base)
    assert exports[-2][2] == str(work / "s12-1")  # the two seeds' mean
    assert exports[-2][exports[-2].index("--with") + 1] == str(work / "s12-2")
    assert exports[-1][2] == str(work / "s13")
    assert "spectral_restorer.mix_back=1" in exports[-6]  # inherited by i's to m's runs


def test_training_recipe_continues_from_given_weights(tmp_path: Path) -> None:
    """INIT=weights/finally-small (a new machine without the run folder): no earlier phase, the
    last phase starts from the shipped weights."""
    runs, _ = _recipe_calls(tmp_path, "finally-small-cpu.sh", {"INIT": "weights/finally-small"})
    later = [(1, f"s{i}") for i in range(4, 12)] + [(1, "s12-1"), (1, "s12-2"), (1, "s13")]
    assert _stages(runs) == later
    train = next(argv for argv in runs if "--run-dir" in argv)
    assert "init_from=weights/finally-small" in train


def test_hifi_recipe_commands_are_valid_configs(tmp_path: Path) -> None:
    """The finally-small-hifi recipe (FULL=1): stages 1 → 2 → 3 load as valid configs."""
    runs, work = _recipe_calls(tmp_path, "finally-small-hifi-cpu.sh", {"FULL": "1"})
    assert _stages(runs) == [(1, "s1"), (2, "s2"), (3, "s3")]
    exports = [argv[argv.index("-o") + 1] for argv in runs if argv[:2] == ["train", "export"]]
    assert exports[-1] == str(work / "finally-small-hifi")


def test_quieten_lowers_the_floor_of_hissy_recordings_and_keeps_their_speech(
    tmp_path: Path,
) -> None:
    """A hissy home recording comes out quiet between words with its speech level kept; a
    studio file is linked unchanged; a second run changes nothing; foreign folders are refused."""
    import pytest

    from finally_cli.audio.level import LevelMeter
    from finally_cli.training.data import noise_floor_db
    from finally_cli.training.recipes import quieten

    def active_db(audio: np.ndarray, rate: int) -> float:
        meter = LevelMeter(rate)
        meter.update(audio)
        return 20 * np.log10(meter.active_rms())

    rng = np.random.default_rng(1)
    words = speechlike(4.0, 16000)[:, 0]
    words[16000:28000] = 0  # pauses
    words /= np.sqrt(np.mean(words**2))
    source = tmp_path / "clean"
    (source / "fr").mkdir(parents=True)
    for name, floor_db in (("home", -25), ("studio", -65)):
        hiss = 10 ** (floor_db / 20) * rng.standard_normal(words.size)
        sf.write(str(source / "fr" / f"{name}.wav"), 0.1 * (words + hiss), 16000)
    out = tmp_path / "quiet"
    summary = quieten.quieten_folder(source, out, above_db=-40, reduce_db=20)
    assert summary == {"files": 2, "gated": 1, "above_db": -40}
    home, _ = sf.read(str(source / "fr" / "home.wav"))
    gated, rate = sf.read(str(out / "fr" / "home.flac"))
    assert gated.size == home.size and rate == 16000
    assert noise_floor_db(gated, rate) < noise_floor_db(home, rate) - 12
    assert abs(active_db(gated, rate) - active_db(home, rate)) < 1.0
    assert (out / "fr" / "studio.wav").is_symlink()
    report = json.loads((out / "quieten.json").read_text())
    assert (
        set(report) == {"fr/home.wav", "fr/studio.wav"}
        and "gated_floor_db" in report["fr/home.wav"]
    )

    stamp = (out / "fr" / "home.flac").stat().st_mtime_ns
    assert quieten.quieten_folder(source, out)["files"] == 2  # resumed: nothing redone
    assert (out / "fr" / "home.flac").stat().st_mtime_ns == stamp

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        quieten.quieten_folder(source, foreign)
    with pytest.raises(SystemExit, match="outside the input"):
        quieten.quieten_folder(source, source / "quiet")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_babble_recipe_mixes_several_training_talkers_and_resumes(tmp_path: Path) -> None:
    """Each clip sums 3–8 talkers drawn from the given folder only, at the asked length; a
    rebuild keeps what exists and clip i does not depend on how many were asked for; a
    foreign folder, a folder inside the speech and a changed seed are refused."""
    import pytest

    from finally_cli.training.recipes import babble

    clean = tmp_path / "train"
    for i in range(10):
        (clean / f"v{i}").mkdir(parents=True)
        sf.write(str(clean / f"v{i}" / "w.wav"), speechlike(1.0, 16000, seed=i), 16000)
    out = tmp_path / "babble"
    assert babble.build(clean, out, count=2, seconds=3.0, seed=5) == 2
    report = json.loads((out / "babble.json").read_text())
    for name in ("babble_0000.flac", "babble_0001.flac"):
        audio, rate = sf.read(str(out / name))
        assert rate == 48000 and audio.size == 3 * 48000
        assert abs(np.abs(audio).max() - 0.5) < 1e-3
        talkers = report["clips"][name]
        assert 3 <= len(talkers) <= 8
        assert all(Path(f).is_relative_to(clean.resolve()) for t in talkers for f in t)
        # talkers overlap: the mix is rarely silent (a single talker pauses between words)
        frames = audio[: audio.size // 480 * 480].reshape(-1, 480)
        assert np.mean(np.sqrt(np.mean(frames**2, 1)) < 0.01) < 0.1
    first = sf.read(str(out / "babble_0000.flac"))[0]
    stamp = (out / "babble_0000.flac").stat().st_mtime_ns
    assert babble.build(clean, out, count=3, seconds=3.0, seed=5) == 1  # only the new one
    assert (out / "babble_0000.flac").stat().st_mtime_ns == stamp
    other = tmp_path / "other"
    babble.build(clean, other, count=1, seconds=3.0, seed=5)
    assert np.array_equal(sf.read(str(other / "babble_0000.flac"))[0], first)

    with pytest.raises(SystemExit, match="another seed"):
        babble.build(clean, out, count=3, seconds=3.0, seed=6)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        babble.build(clean, foreign)
    with pytest.raises(SystemExit, match="outside the speech"):
        babble.build(clean, clean / "babble")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_paired_differences_match_the_files_by_name_and_report_the_mean_change(
    tmp_path: Path,
) -> None:
    # docs/recipes/paired.py decides what ships (docs/training.md): B − A per file, matched by
    # name, whatever the row order, over the files both CSVs scored.
    header = ["system", "file", "condition", "dnsmos_ovrl", "pesq"]
    a_rows = [["m", f"f{i}", "snr_0" if i < 2 else "mp3", 2.0 + i, 1.5] for i in range(4)]
    b_rows = [["m", f"f{i}", "", 2.1 + i, 1.5 + 0.2 * (i % 2)] for i in (3, 2, 1, 0, 9)]
    for name, rows in (("a.csv", a_rows), ("b.csv", b_rows)):
        with (tmp_path / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    script = Path(__file__).parent.parent / "docs" / "recipes" / "paired.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "b.csv"), str(tmp_path / "a.csv")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    assert result.stdout.startswith("4 files")
    assert lines["dnsmos_ovrl"][3] == "+0.1000" and lines["dnsmos_ovrl"][4] == "0.0000"
    assert lines["pesq"][3] == "+0.1000"
    assert lines["snr_0"][1:] == ["+0.100", "/", "+0.100"]  # conditions come from A
