"""`finally eval`: metric sanity, alignment, matching, table = CSV means, baselines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soxr
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.evaluation import metrics as m
from finally_cli.evaluation.align import align, find_lag
from tests.conftest import speechlike, write

runner = CliRunner()


@pytest.fixture(scope="module")
def clean16() -> np.ndarray:
    return speechlike(4.0, 16000, seed=3)[:, 0]


def test_pesq_of_identical_signal_is_maximal(clean16: np.ndarray) -> None:
    assert m.pesq_wb(clean16, clean16) == pytest.approx(4.64, abs=0.01)


def test_estoi_of_identical_signal_is_one(clean16: np.ndarray) -> None:
    assert m.estoi(clean16, clean16) == pytest.approx(1.0, abs=1e-3)


def test_lsd_of_identical_signal_is_zero() -> None:
    x = speechlike(2.0, 48000)[:, 0]
    assert m.lsd(x, x) == 0.0
    assert m.lsd(x, x + 0.05 * np.random.default_rng(0).standard_normal(x.size)) > 1.0


def test_sisdr_of_scaled_delayed_copy_after_alignment() -> None:
    x = speechlike(3.0, 48000, seed=5)[:, 0]
    delayed = np.concatenate([np.zeros(1234, np.float32), 0.3 * x])[: x.size]
    pair = align(x, delayed, 48000)
    assert pair.lag == 1234
    assert m.si_sdr(pair.reference, pair.estimate) >= 40


def test_37ms_delay_found_within_one_sample() -> None:
    rate = 48000
    x = speechlike(3.0, rate, seed=7)[:, 0] + 0.01 * np.random.default_rng(1).standard_normal(
        3 * rate
    ).astype(np.float32)
    lag = round(0.037 * rate)
    assert abs(find_lag(x, np.concatenate([np.zeros(lag, np.float32), x]), rate // 2) - lag) <= 1
    assert abs(find_lag(x, x[lag:], rate // 2) + lag) <= 1


def test_dnsmos_prefers_clean_over_noisy(clean16: np.ndarray) -> None:
    noisy = clean16 + 0.3 * np.random.default_rng(0).standard_normal(clean16.size)
    clean_score = m.dnsmos(clean16 * 0.5)
    noisy_score = m.dnsmos(np.clip(noisy * 0.5, -1, 1))
    assert clean_score["dnsmos_ovrl"] > noisy_score["dnsmos_ovrl"]
    assert clean_score["dnsmos_bak"] > noisy_score["dnsmos_bak"]


def make_sets(tmp_path: Path) -> tuple[Path, Path, Path]:
    clean, noisy, other = tmp_path / "clean", tmp_path / "noisy", tmp_path / "other"
    rng = np.random.default_rng(0)
    for i in range(4):
        x = speechlike(2.0 + 0.25 * i, 16000, seed=i)[:, 0] * 0.5
        write(clean / f"s{i}.wav" if clean.mkdir(exist_ok=True) is None else None, x, 16000)
        noisy.mkdir(exist_ok=True)
        write(noisy / f"s{i}.flac", x + 0.05 * rng.standard_normal(x.size), 16000)
        other.mkdir(exist_ok=True)
        if i < 3:  # one file missing
            y = soxr.resample(x + 0.01 * rng.standard_normal(x.size), 16000, 44100)
            write(other / f"s{i}.wav", y, 44100)
    write(other / "extra.wav", np.zeros(16000), 16000)
    return clean, noisy, other


def test_eval_cli_table_equals_csv_means(tmp_path: Path) -> None:
    clean, noisy, other = make_sets(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "file,condition\n" + "".join(f"s{i}.wav,{'low' if i % 2 else 'high'}\n" for i in range(4))
    )
    result = runner.invoke(
        app,
        [
            "eval",
            str(noisy),
            str(other),
            "--reference",
            str(clean),
            "--manifest",
            str(manifest),
            "--metrics",
            "pesq,estoi,sisdr,lsd,utmos",
            "--csv",
            str(tmp_path / "r.csv"),
            "--json",
            str(tmp_path / "r.json"),
            "--plots",
            str(tmp_path / "plots"),
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "missing in other: 1 files (s3)" in result.stderr
    assert "unmatched in other (not scored): extra" in result.stderr
    assert "utmos: n/a" in result.stderr
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["missing"] == {"other": ["s3"]} and doc["unmatched"] == {"other": ["extra"]}
    assert set(doc["conditions"]) == {"low", "high"}
    for system in ("noisy", "other"):
        for column in ("pesq", "estoi", "sisdr", "lsd"):
            values = [float(r[column]) for r in rows if r["system"] == system]
            assert doc["summary"][system][column]["mean"] == pytest.approx(
                np.mean(values), abs=1e-4
            )
            assert f"{np.mean(values):.3f}" in result.stdout
    assert rows[0]["utmos"] == "n/a"
    delta = doc["summary"]["other"]["pesq"]["delta"]
    assert delta == pytest.approx(
        doc["summary"]["other"]["pesq"]["mean"] - doc["summary"]["noisy"]["pesq"]["mean"]
    )
    assert (tmp_path / "plots" / "box_pesq.png").is_file()
    assert (tmp_path / "plots" / "conditions_pesq.png").is_file()


def test_eval_reports_length_mismatch_and_bad_files(tmp_path: Path) -> None:
    clean, noisy, _ = make_sets(tmp_path)
    short = tmp_path / "short"
    short.mkdir()
    x, _ = __import__("soundfile").read(str(clean / "s0.wav"))
    write(short / "s0.wav", x[: x.size // 2], 16000)
    (short / "s1.wav").write_text("not audio")
    result = runner.invoke(
        app, ["eval", str(short), "--reference", str(clean), "--metrics", "sisdr", "--workers", "1"]
    )
    assert result.exit_code == 1, result.output  # s1 failed: exit 1, as the README says
    assert "short/s0: length differs from reference by -1.00 s" in result.stderr
    assert "short/s1: error" in result.stderr


def test_eval_with_baselines_and_model(tmp_path: Path, tiny_dir: Path) -> None:
    clean, noisy, _ = make_sets(tmp_path)
    result = runner.invoke(
        app,
        [
            "eval",
            "--noisy",
            str(noisy),
            "--reference",
            str(clean),
            "--model",
            str(tiny_dir),
            "--baseline",
            "noisereduce",
            "--baseline",
            "rnnoise",
            "--metrics",
            "sisdr",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(tmp_path / "r.json"),
            "--device",
            "cpu",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert list(doc["summary"]) == ["input", "noisereduce", "rnnoise", "tiny"]
    assert all(doc["summary"][s]["sisdr"]["n"] == 4 for s in doc["summary"])


def test_unknown_metric_and_baseline() -> None:
    result = runner.invoke(app, ["eval", ".", "--metrics", "mosnet"])
    assert result.exit_code == 2 and "unknown ['mosnet']" in result.stderr
    result = runner.invoke(app, ["eval", "--noisy", ".", "--baseline", "demucs"])
    assert result.exit_code == 2 and "--baseline 'demucs'" in result.stderr


def test_eval_rescores_when_the_model_changes(tmp_path: Path) -> None:
    # Same folder, new weights (a retrained model): the work dir's old outputs must not be
    # scored again; the same weights reuse them (an interrupted eval resumes).
    from finally_cli.models.hub import create_model, save_model

    clean, noisy, _ = make_sets(tmp_path)
    model = tmp_path / "model"
    args = [
        "eval", "--noisy", str(noisy), "--reference", str(clean), "--model", str(model),
        "--metrics", "sisdr", "--work-dir", str(tmp_path / "work"), "--device", "cpu",
        "--workers", "1", "--json", str(tmp_path / "r.json"),
    ]  # fmt: skip

    def enhanced() -> Path:  # one folder per set of weights, named by their fingerprint
        return sorted((tmp_path / "work").glob("enhanced-*/s0.wav"))[0]

    def run(seed: int) -> tuple[float, float]:
        save_model(create_model("tiny", seed=seed), model)
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        doc = json.loads((tmp_path / "r.json").read_text())
        return doc["summary"]["model"]["sisdr"]["mean"], enhanced().stat().st_mtime_ns

    first, made = run(seed=0)
    again, remade = run(seed=0)
    assert (again, remade) == (first, made)  # reused
    other, _ = run(seed=1)
    assert other != first  # re-enhanced with the new weights
    assert len(list((tmp_path / "work").glob("enhanced-*/s0.wav"))) == 2
