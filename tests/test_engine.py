"""The inference engine: lengths, seams, gain, dry/wet, channels, sample rates."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

from finally_cli.audio.chunking import OverlapAdder, fade_in, mirror_indices, plan_windows
from finally_cli.inference.enhancer import Enhancer, EnhancerOptions
from finally_cli.models.config import preset
from tests.conftest import snr_db, speechlike


class IdentityModel(torch.nn.Module):
    """Test double: returns its 16 kHz input resampled to 48 kHz (soxr, per window)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = preset("finally-small")
        self.length_multiple = 4096

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        rows = [soxr.resample(w.numpy(), 16000, 48000, quality="VHQ") for w in waveform[:, 0]]
        return torch.from_numpy(np.stack(rows)).unsqueeze(1)


def cpu(**kwargs) -> EnhancerOptions:  # noqa: ANN003
    return EnhancerOptions(device="cpu", **kwargs)


def test_fades_are_complementary() -> None:
    fade = fade_in(3000)
    assert np.all(np.diff(fade) > 0)
    assert np.max(np.abs(fade + (1.0 - fade) - 1.0)) == 0.0


def test_plan_covers_signal_with_equal_windows() -> None:
    plan = plan_windows(samples=100_000, chunk=16384, overlap=4000, edge=2048, multiple=4096)
    assert set(plan.lengths) == {16384}
    assert plan.starts[0] == 0
    assert plan.starts[-1] + plan.lengths[-1] >= 100_000 + 2 * 2048
    assert all(b - a == 16384 - 4000 for a, b in zip(plan.starts, plan.starts[1:]))
    single = plan_windows(samples=5000, chunk=16384, overlap=4000, edge=2048, multiple=4096)
    assert single.lengths == (12288,)


def test_mirror_indices() -> None:
    idx = mirror_indices(np.arange(-3, 8), 5)
    assert idx.tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert mirror_indices(np.arange(-2, 3), 1).tolist() == [0] * 5


def test_overlap_add_of_identity_windows_reproduces_signal() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(30_000)
    plan = plan_windows(len(signal), 8192, 1500, 700, 1024)
    adder = OverlapAdder(plan, factor=1, tracks=1)
    pieces = []
    for k, start in enumerate(plan.starts):
        idx = mirror_indices(
            np.arange(start - plan.edge, start - plan.edge + plan.lengths[k]), len(signal)
        )
        pieces.append(adder.add(k, 0, signal[idx]))
    out = np.concatenate(pieces, axis=1)[0]
    assert out.shape == signal.shape
    assert np.max(np.abs(out - signal)) < 1e-6


@pytest.mark.parametrize("chunk,overlap", [(1.024, 0.25), (2.048, 0.5), (4.096, 1.0), (3.0, 0.05)])
def test_identity_model_has_no_seams(chunk: float, overlap: float) -> None:
    sample_rate = 44100
    audio = speechlike(9.3, sample_rate, max_hz=6500)[:, 0]
    enhancer = Enhancer(
        IdentityModel(), cpu(chunk_seconds=chunk, overlap_seconds=overlap, batch_size=3)
    )
    out = enhancer.enhance_array(audio, sample_rate)[:, 0]
    reference = soxr.resample(audio, sample_rate, 48000, quality="VHQ")
    assert out.shape == reference.shape
    assert snr_db(reference, out) >= 60


def test_random_small_chunked_matches_whole_file(small_model) -> None:  # noqa: ANN001
    audio = speechlike(21.0, 16000)[:, 0]
    whole = Enhancer(small_model, cpu(chunk_seconds=30.0)).enhance_array(audio, 16000)
    chunked = Enhancer(small_model, cpu(chunk_seconds=4.096, overlap_seconds=0.5)).enhance_array(
        audio, 16000
    )
    assert snr_db(whole, chunked) >= 35


@pytest.mark.parametrize(
    "frames,sample_rate",
    [
        (1, 16000),
        (1, 44100),
        (7, 8000),
        (12_345, 44100),
        (15_999, 16000),
        (40_001, 22050),
        (100_003, 384000),
    ],
)
def test_output_length(frames: int, sample_rate: int, tiny_dir) -> None:  # noqa: ANN001
    enhancer = Enhancer.from_pretrained(
        str(tiny_dir), cpu(chunk_seconds=1.024, overlap_seconds=0.25)
    )
    audio = np.random.default_rng(0).standard_normal(frames).astype(np.float32) * 0.1
    out = enhancer.enhance_array(audio, sample_rate)
    assert out.shape == (round(frames * 48000 / sample_rate), 1)
    assert np.isfinite(out).all()


def test_one_gain_per_file_keeps_loudness() -> None:
    sample_rate = 16000
    audio = speechlike(8.0, sample_rate, max_hz=6000)[:, 0] * 0.02  # quiet input
    audio[sample_rate * 4 :] *= 10  # a loud second half: per-chunk gain would flatten this
    out = Enhancer(IdentityModel(), cpu(chunk_seconds=1.024, overlap_seconds=0.25)).enhance_array(
        audio, sample_rate
    )[:, 0]
    reference = soxr.resample(audio, sample_rate, 48000, quality="VHQ")
    assert snr_db(reference, out) >= 60


def test_mix_zero_returns_the_input_and_half_blends(small_model) -> None:  # noqa: ANN001
    audio = speechlike(3.0, 48000)[:, 0]
    dry = Enhancer(small_model, cpu(mix=0.0)).enhance_array(audio, 48000)[:, 0]
    assert np.max(np.abs(dry - audio)) < 1e-6
    wet = Enhancer(small_model, cpu(mix=1.0)).enhance_array(audio, 48000)[:, 0]
    half = Enhancer(small_model, cpu(mix=0.5)).enhance_array(audio, 48000)[:, 0]
    assert np.max(np.abs(half - 0.5 * (wet + audio))) < 1e-5


def test_channels_each_and_mix(tiny_dir) -> None:  # noqa: ANN001
    audio = speechlike(1.5, 22050, channels=8)
    each = Enhancer.from_pretrained(str(tiny_dir), cpu(channels="each")).enhance_array(audio, 22050)
    mixed = Enhancer.from_pretrained(str(tiny_dir), cpu(channels="mix")).enhance_array(audio, 22050)
    assert each.shape == (round(audio.shape[0] * 48000 / 22050), 8)
    assert mixed.shape == (each.shape[0], 1)
    assert not np.allclose(each[:, 0], each[:, 1])


def test_silence_stays_finite(tiny_dir) -> None:  # noqa: ANN001
    out = Enhancer.from_pretrained(str(tiny_dir), cpu()).enhance_array(np.zeros(16000), 16000)
    assert out.shape == (48000, 1) and np.isfinite(out).all()


def test_output_sample_rate_option(tiny_dir) -> None:  # noqa: ANN001
    out = Enhancer.from_pretrained(str(tiny_dir), cpu(sample_rate=44100)).enhance_array(
        np.random.default_rng(1).standard_normal(16001).astype(np.float32) * 0.1, 16000
    )
    assert out.shape == (round(16001 * 44100 / 16000), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_close_to_fp32(small_model) -> None:  # noqa: ANN001
    audio = speechlike(5.0, 16000)[:, 0]
    ref = Enhancer(small_model, EnhancerOptions(device="cuda")).enhance_array(audio, 16000)
    fast = Enhancer(small_model, EnhancerOptions(device="cuda", precision="bf16")).enhance_array(
        audio, 16000
    )
    assert snr_db(ref, fast) > 20


def test_cpu_workers_and_batches_give_the_same_audio_and_restore_threads(
    small_model, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    import soundfile as sf

    # Two files of several windows each, the last windows short: packed across files, in
    # flight on one or two workers, one to three windows per forward, handed back in order.
    files = []
    for i, seconds in enumerate((9.7, 5.3)):
        path = tmp_path / f"in{i}.wav"
        sf.write(path, speechlike(seconds, 16000, seed=i), 16000)
        files.append(path)
    threads = torch.get_num_threads()
    outputs = {}
    forwards: list[list[int]] = []
    run_windows = Enhancer.run_windows

    def spy(self, windows):  # noqa: ANN001, ANN202
        forwards[-1].append(windows.shape)
        return run_windows(self, windows)

    monkeypatch.setattr(Enhancer, "run_windows", spy)
    for workers, batch in ((1, 1), (2, 1), (2, None), (1, 3)):
        forwards.append([])
        options = cpu(chunk_seconds=2.048, overlap_seconds=0.25, workers=workers, batch_size=batch)
        enhancer = Enhancer(small_model, options)
        # The recurrent restorer runs two windows per forward on CPU unless told otherwise.
        assert enhancer.workers == workers and enhancer.batch_size == (batch or 2)
        pairs = [(f, tmp_path / f"w{workers}b{batch}_{f.name}") for f in files]
        results = enhancer.enhance_files(pairs)
        assert [r.status for r in results] == ["ok", "ok"]
        assert torch.get_num_threads() == threads
        outputs[workers, batch] = [sf.read(out)[0] for _, out in pairs]
        assert max(shape[0] for shape in forwards[-1]) == (batch or 2)
    assert sum(shape[0] for shape in forwards[0]) == sum(shape[0] for shape in forwards[-1])
    for key, audio in outputs.items():
        for one, other in zip(outputs[1, 1], audio):
            assert one.shape == other.shape, key
            assert np.max(np.abs(one - other)) < 1e-4, key


def test_compile_or_gpu_uses_one_worker(small_model) -> None:  # noqa: ANN001
    assert Enhancer(small_model, cpu(workers=3)).workers == 3
    assert Enhancer(small_model, cpu(workers=3, compile=True)).workers == 1
    with pytest.raises(Exception, match="--workers 0"):
        cpu(workers=0)
