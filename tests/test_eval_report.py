"""`finally eval --html`: the listening report, checked in headless Chromium."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.evaluation import spectrogram
from finally_cli.evaluation.html_report import media_keys
from tests.browser import Browser, chromium
from tests.test_eval import make_sets

runner = CliRunner()


def test_media_keys_spread_over_conditions() -> None:
    keys = [f"f{i}" for i in range(9)]
    conditions = {k: ("a" if i < 6 else "b") for i, k in enumerate(keys)}
    assert media_keys(keys, conditions, 4) == ["f0", "f1", "f6", "f7"]
    assert media_keys(keys, conditions, 0) == keys


def test_spectrogram_png_decodes_with_low_bands_at_the_bottom() -> None:
    from PIL import Image

    t = np.arange(48000) / 48000
    level = spectrogram.power_db(0.5 * np.sin(2 * np.pi * 300 * t), rows=64, width=50)
    assert level.shape == (64, 50)
    assert abs(level.max() - 20 * np.log10(0.5)) < 1.5  # a full-scale sine reads ≈ 0 dB
    image = Image.open(io.BytesIO(spectrogram.to_png(level, top_db=float(level.max()))))
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert image.size == (50, 64)
    assert pixels[-16:].mean() > 4 * pixels[:16].mean()  # the 300 Hz tone is low in the image


def run_report(tmp_path: Path, *extra: str) -> tuple[Path, object]:
    clean, noisy, other = make_sets(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "file,condition\n" + "".join(f"s{i}.wav,{'low' if i % 2 else 'high'}\n" for i in range(4))
    )
    page = tmp_path / "out" / "report.html"
    result = runner.invoke(
        app,
        ["eval", str(noisy), str(other), "--reference", str(clean), "--manifest", str(manifest),
         "--metrics", "pesq,sisdr,lsd,utmos", "--csv", str(tmp_path / "r.csv"), "--workers", "1",
         "--html", str(page), "--quiet", *extra],
    )  # fmt: skip
    return page, result


def test_report_refuses_a_media_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "out" / "report_files").mkdir(parents=True)
    (tmp_path / "out" / "report_files" / "mine.txt").write_text("keep me")
    page, result = run_report(tmp_path)
    assert result.exit_code == 1
    assert "report_files: exists and was not written by finally eval" in result.stderr
    assert (tmp_path / "out" / "report_files" / "mine.txt").read_text() == "keep me"
    assert not page.exists()


def test_negative_media_cap_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path), "--html", "r.html", "--html-files", "-1"])
    assert result.exit_code == 2 and "--html-files -1: must be >= 0" in result.stderr


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (Debian package chromium)")
def test_report_loads_in_chromium_with_players_spectrograms_and_sorting(tmp_path: Path) -> None:
    page, result = run_report(tmp_path, "--html-files", "3")
    assert result.exit_code == 0, result.output
    media = page.with_name("report_files")
    # 3 files with media × (noisy, other, reference); the 'other' system lacks s3.
    assert len(list(media.glob("*.flac"))) == len(list(media.glob("*.png"))) == 9
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    with Browser(chromium()) as browser:
        browser.open(page)
        files = browser.evaluate("Array.from(document.querySelectorAll('.file h3'))"
                                 ".map(h => h.firstChild.textContent)")  # fmt: skip
        assert files == ["s0", "s1", "s2", "s3"]
        loaded = browser.evaluate(
            """(async () => {
              const audios = Array.from(document.querySelectorAll('audio'));
              const durations = await Promise.all(audios.map((a) => new Promise((done) => {
                a.addEventListener('loadedmetadata', () => done(a.duration), {once: true});
                a.addEventListener('error', () => done(-1), {once: true});
                a.preload = 'metadata'; a.load();
              })));
              const images = Array.from(document.querySelectorAll('.file img'));
              images.forEach((i) => { i.loading = 'eager'; });
              await Promise.all(images.map((i) => i.decode().catch(() => null)));
              return {durations, widths: images.map((i) => i.naturalWidth),
                      capped: document.body.textContent.includes('on 3 of 4 files')};
            })()"""
        )
        assert len(loaded["durations"]) == 9 and min(loaded["durations"]) > 1.9
        assert len(loaded["widths"]) == 9 and min(loaded["widths"]) > 0
        assert loaded["capped"]
        # Sort the files by the 'other' system's SI-SDR, high to low.
        order = browser.evaluate(
            """(() => {
              const set = (name, value) => {
                const s = document.querySelector(`select[name=${name}]`);
                s.value = value; s.dispatchEvent(new Event('change'));
              };
              set('metric', 'sisdr'); set('system', 'other'); set('descending', 'true');
              return Array.from(document.querySelectorAll('.file h3'))
                .map(h => h.firstChild.textContent);
            })()"""
        )
        scores = {r["file"]: float(r["sisdr"]) for r in rows if r["system"] == "other"}
        assert order == sorted(scores, key=scores.get, reverse=True) + ["s3"]  # missing last
        # Sort the summary by PESQ (the first click sorts high to low, the second low to high).
        systems = browser.evaluate(
            """(() => {
              const th = Array.from(document.querySelectorAll('table.summary th'))
                .find((h) => h.textContent.startsWith('PESQ'));
              th.click(); th.click();
              return Array.from(document.querySelectorAll('table.summary tbody th'))
                .map((h) => h.textContent);
            })()"""
        )
        means = {
            s: np.mean([float(r["pesq"]) for r in rows if r["system"] == s])
            for s in ("noisy", "other")
        }
        assert systems == sorted(means, key=means.get)
        shot = browser.screenshot(tmp_path / "report.png")
        assert browser.problems() == []
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    if os.environ.get("FINALLY_REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["FINALLY_REPORT_SCREENSHOT"])
