"""The fixed validation set: `prepare-val` writes it; training scores the generator on it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from finally_cli.training.data import PairDataset

MANIFEST = "manifest.csv"


def prepare_validation(
    dataset: PairDataset, out_dir: Path, count: int, offset: int = 10_000_000
) -> Path:
    """Write `count` noisy/clean pairs (48 kHz) and a manifest; items far from training's.

    Items are drawn at indices `offset + i` of the seeded pair stream, so the same seed
    and config give byte-identical files.
    """
    (out_dir / "noisy").mkdir(parents=True, exist_ok=True)
    (out_dir / "clean").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        noisy, clean, applied = dataset.pair(offset + i)
        name = f"val_{i:05d}.wav"
        peak = max(1.0, float(np.max(np.abs(noisy))), float(np.max(np.abs(clean))))
        sf.write(
            str(out_dir / "noisy" / name), (noisy / peak).astype(np.float32), 48000, subtype="FLOAT"
        )
        sf.write(
            str(out_dir / "clean" / name), (clean / peak).astype(np.float32), 48000, subtype="FLOAT"
        )
        rows.append({"file": name, "condition": "+".join(applied)})
    with (out_dir / MANIFEST).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "condition"])
        writer.writeheader()
        writer.writerows(rows)
    return out_dir


def run_validation(
    generator: torch.nn.Module,
    folder: Path,
    limit: int,
    dnsmos: bool,
    device: torch.device,
    samples: int,
) -> tuple[dict[str, float], list]:
    """Mean PESQ / ESTOI / SI-SDR (/ DNSMOS OVRL) at 16 kHz and the 48 kHz log-spectral distance
    (`lsd`, the upper band included) of the enhancer's output on the first `limit` pairs."""
    import soxr

    from finally_cli.evaluation import metrics as m
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions

    with (folder / MANIFEST).open(newline="", encoding="utf-8") as handle:
        names = [r["file"] for r in csv.DictReader(handle)][:limit]
    was_training = generator.training
    generator.eval()
    enhancer = Enhancer(generator, EnhancerOptions(device=str(device)))
    pesq, estoi, sisdr, ovrl, lsd, kept = [], [], [], [], [], []
    try:
        for name in names:
            noisy, rate = sf.read(str(folder / "noisy" / name), dtype="float32")
            clean, _ = sf.read(str(folder / "clean" / name), dtype="float32")
            enhanced = enhancer.enhance_array(noisy, rate)[:, 0]
            out_rate = enhancer.out_rate
            ref16 = soxr.resample(clean, rate, 16000)
            est16 = soxr.resample(enhanced, out_rate, 16000)[: ref16.size]
            ref16 = ref16[: est16.size]
            pesq.append(m.pesq_wb(ref16, est16))
            estoi.append(m.estoi(ref16, est16))
            sisdr.append(m.si_sdr(ref16, est16))
            if out_rate == 48000 and rate == 48000:
                n = min(clean.size, enhanced.size)
                lsd.append(m.lsd(clean[:n], enhanced[:n]))
            if dnsmos:
                ovrl.append(m.dnsmos(np.clip(est16, -1, 1))["dnsmos_ovrl"])
            if len(kept) < samples:
                kept.append((soxr.resample(noisy, rate, out_rate), enhanced, out_rate))
    finally:
        generator.train(was_training)
    scores = {
        "pesq": float(np.nanmean(pesq)),
        "estoi": float(np.nanmean(estoi)),
        "si_sdr": float(np.nanmean(sisdr)),
    }
    if ovrl:
        scores["dnsmos_ovrl"] = float(np.mean(ovrl))
    if lsd:
        scores["lsd"] = float(np.mean(lsd))
    return scores, kept
