"""Building the stage's generator, discriminator and loss modules from a TrainConfig."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from finally_cli.errors import CheckpointError, ConfigError
from finally_cli.models.config import GeneratorConfig, apply_overlay
from finally_cli.models.generator import FinallyGenerator
from finally_cli.models.hub import create_model, load_ssl_weights, read_config, resolve_model
from finally_cli.models.layers import zero_conv
from finally_cli.training.checkpoint import newest_weights, read_tensors
from finally_cli.training.config import TrainConfig
from finally_cli.training.losses import LMOSLoss

log = logging.getLogger(__name__)


def _init_source(path: str) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Config and weights of a previous stage: an exported model folder or a run folder."""
    folder = Path(path)
    if (folder / "model_config.json").is_file():  # a run folder
        config = GeneratorConfig.from_dict(json.loads((folder / "model_config.json").read_text()))
        return config, newest_weights(folder)[1]  # skips a newest checkpoint a kill corrupted
    resolved = resolve_model(path)
    weights = resolved.folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: no model.safetensors to start from")
    return read_config(resolved.folder), read_tensors(resolved.folder, "model")


def generator_config(config: TrainConfig) -> tuple[GeneratorConfig, dict | None]:
    """The stage's generator config (+ initial weights when starting from a previous stage)."""
    gen, weights, _ = _stage_source(config)
    return gen, weights


def _stage_source(
    config: TrainConfig,
) -> tuple[GeneratorConfig, dict | None, GeneratorConfig | None]:
    """`generator_config`, plus the previous stage's own config (before the overlays)."""
    weights = previous = None
    if config.init_from:
        gen, weights = _init_source(config.init_from)
        previous = gen
    else:
        from finally_cli.models.config import PRESETS, preset

        gen = (
            preset(config.model)
            if config.model in PRESETS
            else read_config(resolve_model(config.model).folder)
        )
    for overlay in config.overlays:
        gen = apply_overlay(gen, overlay)
    gen = replace(
        gen, upsample_wave_unet=replace(gen.upsample_wave_unet, enabled=config.stage == 3)
    )
    return gen, weights, previous


def _grown_inputs(
    own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Previous-stage weights of layers that only gained input channels, zero-padded.

    A config that appends input features (e.g. `spectral_restorer.magnitude_bins`) widens
    dimension 1 of its first layer's weight and nothing else; with zero weights on the new
    channels the layer, and so the model, computes exactly what it did, and training then
    learns to use them (instead of restarting that layer from random).
    """
    grown = {}
    for name, old in weights.items():
        new = own.get(name)
        only_inputs_grew = (
            new is not None
            and new.dim() == old.dim() >= 2
            and new.shape[0] == old.shape[0]
            and new.shape[2:] == old.shape[2:]
            and new.shape[1] > old.shape[1]
        )
        if only_inputs_grew:
            grown[name] = torch.zeros_like(new, dtype=old.dtype)
            grown[name][:, : old.shape[1]] = old
            added = new.shape[1] - old.shape[1]
            log.info("%s: %d input channels added with zero weights", name, added)
    return grown


def _widened_gru(
    own: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    gru: str,
    layer: int,
    old: int,
    new: int,
) -> dict[str, torch.Tensor]:
    """One GRU layer's trained weights (`gru` the module's state-dict prefix) widened from
    `old` to `new` units: the new units keep this model's random weights, and the old units
    read no new unit, of the state or of a wider input (those weights start at zero)."""
    grown: dict[str, torch.Tensor] = {}
    for kind in ("ih", "hh"):
        key, bias_key = f"{gru}.weight_{kind}_l{layer}", f"{gru}.bias_{kind}_l{layer}"
        trained = weights[key].unflatten(0, (3, old))
        tensor = own[key].unflatten(0, (3, new)).clone().to(trained.dtype)
        tensor[:, :old] = 0
        tensor[:, :old, : trained.shape[2]] = trained
        grown[key] = tensor.flatten(0, 1)
        bias = own[bias_key].unflatten(0, (3, new)).clone().to(trained.dtype)
        bias[:, :old] = weights[bias_key].unflatten(0, (3, old))
        grown[bias_key] = bias.flatten()
    return grown


def _grown_hidden(
    model: FinallyGenerator,
    own: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    previous: GeneratorConfig,
) -> dict[str, torch.Tensor]:
    """Previous-stage spectral-restorer weights widened to a larger `hidden`.

    The new units of the input layer and of every GRU layer (the stack's and the residual
    layers') get this model's fresh random weights, but nothing old reads them: the old GRU
    units' weights from the new units and the heads' weights from the new last-layer units
    start at zero, and so do the residual and backward projections' weights into and out of
    the new units. (The other readers of the state — the backward GRU's input, the bin
    refiner's context — only gain input columns, which `_grown_inputs` zero-pads.) So the old
    units compute what they did, the grown model's output is exactly the trained model's, and
    the new units join in as their outgoing weights learn. The input features stay as they
    were (a deep filter growing in the same overlay then maps them, `_grown_deep_filter`).
    """
    restorer, before = model.spectral_restorer, previous.spectral_restorer
    if restorer is None or before is None:
        return {}
    prefix = "spectral_restorer."
    layers = restorer.gru.num_layers
    old, new = before.hidden, restorer.gru.hidden_size
    if new == old:
        return {}
    if new < old or before.gru_layers != layers:
        log.warning(
            "spectral_restorer: cannot grow hidden %d → %d here (only wider, same GRU "
            "layers): the changed layers start fresh", old, new,
        )  # fmt: skip
        return {}

    grown: dict[str, torch.Tensor] = {}
    encoder = weights[prefix + "encoder.0.weight"]
    conv = own[prefix + "encoder.0.weight"][:, : encoder.shape[1]].clone().to(encoder.dtype)
    conv[:old] = encoder
    grown[prefix + "encoder.0.weight"] = conv
    for name in ("encoder.0.bias", "encoder.1.weight"):
        tensor = own[prefix + name].clone().to(weights[prefix + name].dtype)
        tensor[:old] = weights[prefix + name]
        grown[prefix + name] = tensor
    grus = [("gru", layer) for layer in range(layers)]
    grus += [(f"residual_grus.{k}", 0) for k in range(len(restorer.residual_grus))]
    for gru, layer in grus:
        if prefix + f"{gru}.weight_ih_l{layer}" not in weights:
            continue  # a residual layer new in this stage starts fresh anyway
        grown.update(_widened_gru(own, weights, prefix + gru, layer, old, new))
    # Projections added to the state: their old outputs read no new unit, and the new units
    # get nothing from them until training gives it.
    projections = [f"residual_projections.{k}" for k in range(len(restorer.residual_grus))]
    for key in (*projections, "backward_projection", "freq_projection"):
        key = prefix + key
        if key + ".weight" not in weights:
            continue  # absent from the model, or new in this stage (starts at zero anyway)
        weight, bias = weights[key + ".weight"], weights[key + ".bias"]
        wide = weight.new_zeros(own[key + ".weight"].shape)
        wide[:old, : weight.shape[1]] = weight
        grown[key + ".weight"] = wide
        grown[key + ".bias"] = torch.cat([bias, bias.new_zeros(new - old)])
    for head in ("gain_head", "df_head"):
        weight = weights[prefix + head + ".weight"]
        grown[prefix + head + ".weight"] = torch.cat(
            [weight, weight.new_zeros(weight.shape[0], new - old)], 1
        )
    log.info("spectral_restorer: hidden grown from %d to %d (new units start unread)", old, new)
    return grown


def _grown_backward(
    own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Previous-stage backward-GRU weights widened to a larger `backward_gru_hidden`.

    As `_grown_hidden` does for the forward stack: the new units get this model's fresh random
    weights, the old units read none of them (their input and state weights from the new
    units start at zero), and the projection that adds the backward GRU's state to the stack
    reads them with zero weights. So the grown model's output is exactly the trained model's.
    Run after `_grown_hidden`, whose wider stack only adds input columns here (zero-padded).
    """
    prefix = "spectral_restorer.backward_gru."
    key = prefix + "weight_hh_l0"
    if key not in weights or key not in own:
        return {}
    old, new = weights[key].shape[1], own[key].shape[1]
    if new <= old:
        return {}
    grown = _widened_gru(own, weights, "spectral_restorer.backward_gru", 0, old, new)
    projection = "spectral_restorer.backward_projection.weight"
    weight = weights[projection]  # already as wide as the stack if `_grown_hidden` ran
    wide = weight.new_zeros(own[projection].shape)
    wide[: weight.shape[0], :old] = weight[:, :old]
    grown[projection] = wide
    log.info("spectral_restorer: backward GRU grown from %d to %d (new units start unread)",
             old, new)  # fmt: skip
    return grown


REFINER_PARTS = tuple(
    f"spectral_restorer.{part}." for part in ("bin_refiner", "bin_activations", "bin_context")
)


def _grown_refiner(
    own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Previous-stage bin-refiner weights widened to more `bin_refiner_channels`.

    The new channels of the first two conv layers (and their activations and their share of
    the recurrent context) get this model's fresh random weights; what the old channels and
    the last layer read of them starts at zero. So the refiner's gain, and the model's output,
    is exactly the trained model's, and the new channels join in as those weights learn.
    """
    grown: dict[str, torch.Tensor] = {}
    for name, old in weights.items():
        new = own.get(name)
        if new is None or not name.startswith(REFINER_PARTS) or new.shape == old.shape:
            continue
        if new.dim() != old.dim() or any(n < o for n, o in zip(new.shape, old.shape)):
            continue  # narrower: the layer starts fresh (build_generator reports it)
        tensor = new.clone().to(old.dtype)
        if tensor.dim() >= 2:
            tensor[: old.shape[0], old.shape[1] :] = 0  # old channels read no new channel
        tensor[tuple(slice(0, size) for size in old.shape)] = old
        grown[name] = tensor
    if grown:
        log.info("bin refiner widened (new channels start unread)")
    return grown


def _grown_deep_filter(
    model: FinallyGenerator,
    own: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    previous: GeneratorConfig,
) -> dict[str, torch.Tensor]:
    """Previous-stage spectral-restorer weights mapped onto more deep-filtered bins or taps.

    A config that raises `spectral_restorer.df_bins` gives the filter head rows for the new
    bins and the input layer the complex values of those bins, in the middle of its inputs
    (after the old bins' real and imaginary parts respectively). The old columns move to
    their new places, the new ones get zero weights, and the new bins start as identity
    filters (centre tap 1, as the gained spectrum passed through before). A config that
    raises `df_order` keeps every old tap at the frame it read (the new taps reach further
    into the past, or further ahead when `df_lookahead` grows too) and starts the new taps at
    zero. Either way the grown model computes exactly what it did.
    """
    restorer, before = model.spectral_restorer, previous.spectral_restorer
    head = "spectral_restorer.df_head."
    encoder = "spectral_restorer.encoder.0.weight"
    if restorer is None or head + "weight" not in weights or encoder not in weights:
        return {}
    old, new = before.df_bins, restorer.df_bins
    old_order, order = before.df_order, restorer.df_order
    shift = (order - 1 - restorer.df_lookahead) - (old_order - 1 - before.df_lookahead)
    grows = (old, old_order) != (new, order)
    fits = old <= new and 0 <= shift and shift + old_order <= order
    rows, hidden = weights[head + "weight"].shape
    if not grows or not fits or rows != old * old_order * 2:
        return {}
    weight = own[head + "weight"].new_zeros(new, order, 2, hidden)
    weight[:old, shift : shift + old_order] = weights[head + "weight"].view(old, old_order, 2, -1)
    bias = restorer._identity_taps().to(own[head + "bias"].dtype).view(new, order, 2)
    bias[:old] = 0
    bias[:old, shift : shift + old_order] = weights[head + "bias"].view(old, old_order, 2)
    enc_old = weights[encoder]
    bands = restorer.erb.shape[0]
    enc = torch.zeros_like(own[encoder])
    extra = enc_old.shape[1] - bands - 2 * old  # magnitude features, if any (they may grow)
    if enc_old.shape[0] != enc.shape[0] or enc.shape[1] - bands - 2 * new < extra:
        return {}
    enc[:, : bands + old] = enc_old[:, : bands + old]  # bands, real parts of the old bins
    enc[:, bands + new : bands + new + old] = enc_old[:, bands + old : bands + 2 * old]  # imag
    enc[:, bands + 2 * new : bands + 2 * new + extra] = enc_old[:, bands + 2 * old :]
    log.info(
        "deep filter grown from %d bins × %d taps to %d × %d (new bins start as identity "
        "filters, new taps at zero)",
        old, old_order, new, order,
    )  # fmt: skip
    return {head + "weight": weight.flatten(0, 2), head + "bias": bias.flatten(), encoder: enc}


def build_generator(config: TrainConfig) -> FinallyGenerator:
    gen_config, weights, previous = _stage_source(config)
    model = create_model(gen_config, seed=config.seed)
    load_ssl_weights(model)
    if weights is None and config.init == "identity":
        model.identity_init_()
        log.info("identity init: the generator starts with output ≈ input")
    if weights is not None:
        own = model.state_dict()
        if previous is not None:  # a wider restorer first, so the mappings below see its shapes
            weights = {**weights, **_grown_hidden(model, own, weights, previous)}
        weights = {**weights, **_grown_backward(own, weights)}
        weights = {**weights, **_grown_refiner(own, weights)}
        # The deep filter's mapping of the input layer replaces _grown_inputs' (which pads at
        # the end) when both apply.
        grown = _grown_inputs(own, weights)
        if previous is not None:
            grown.update(_grown_deep_filter(model, own, weights, previous))
        weights = {**weights, **grown}
        usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        new = sorted(set(own) - set(usable))
        dropped = sorted(set(weights) - set(usable))
        model.load_state_dict(usable, strict=False)
        if new:
            log.info("initialised %d tensors fresh (new in this stage), e.g. %s", len(new), new[0])
        up = model.upsample_wave_unet
        if up is not None and up.residual and any(k.startswith("upsample_wave_unet.") for k in new):
            # A residual block added in this stage starts as the plain interpolation of the
            # previous stage's output instead of adding noise to it.
            zero_conv(up.upsample)
        if dropped:
            log.info("dropped %d tensors of the previous stage, e.g. %s", len(dropped), dropped[0])
    blocks = model.blocks()
    unknown = [name for name in config.freeze if name not in blocks]
    if unknown:
        raise ConfigError(
            f"freeze: no generator block {', '.join(map(repr, unknown))} "
            f"(blocks: {', '.join(blocks)})"
        )
    for name in config.freeze:
        blocks[name].requires_grad_(False)
    if config.freeze and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("freeze: every generator block is frozen, nothing to train")
    if config.freeze:
        log.info("frozen: %s", ", ".join(config.freeze))
    return model


def build_lmos(config: TrainConfig, generator: FinallyGenerator) -> LMOSLoss:
    """LMOS over the feature space `loss.features` names.

    "auto": WavLM's conv encoder when WavLM weights load, else the best probe-ranked
    installed pretrained layer (`models.pretrained.ranking.PROBE_RANKING`), else the MR-STFT
    fallback.
    """
    choice = config.loss.features
    encoder, name = None, "wavlm"
    if config.loss.lmos == 0 and choice == "auto":
        choice = "mrstft"  # LMOS is not computed: load no encoder for it
    if choice in ("auto", "wavlm"):
        if generator.ssl is not None and generator.config.ssl.weights != "random":
            # A frozen copy: fine-tuning the generator's WavLM must not move the loss space.
            encoder = copy.deepcopy(generator.ssl.model.feature_extractor)
        else:
            encoder = _hub_wavlm_encoder(generator.config)
        if encoder is None and choice == "wavlm":
            raise ConfigError(
                "loss.features=wavlm but no WavLM weights can be loaded "
                "(the Hub cache has no microsoft/wavlm-large)"
            )
        if encoder is None:
            from finally_cli.models.pretrained import installed
            from finally_cli.models.pretrained.ranking import best_installed

            choice = best_installed(installed()) or "mrstft"
            log.warning(
                "WavLM weights unavailable: LMOS uses %s in place of WavLM features",
                "the multi-resolution STFT loss" if choice == "mrstft" else choice,
            )
    if choice not in ("auto", "wavlm", "mrstft"):
        from finally_cli.models.pretrained import feature_encoder

        encoder = feature_encoder(choice)
        name = choice.rpartition(":")[0]
        log.info("LMOS features: %s", choice)
    loss = LMOSLoss(
        encoder,
        config.sample_rate,
        config.loss.lmos_feature,
        config.loss.lmos_stft,
        feature_name=name,
    )
    # What "auto" became here: a resumed run must keep the feature space it started with.
    loss.resolved_features = "mrstft" if encoder is None else (choice if name != "wavlm" else name)
    return loss


def _hub_wavlm_encoder(gen: GeneratorConfig) -> torch.nn.Module | None:
    try:
        from transformers import WavLMModel

        model = WavLMModel.from_pretrained(
            gen.ssl.model_id,
            revision=gen.ssl.revision,
            local_files_only=True,
            use_safetensors=True,
        )
    except (OSError, ValueError):
        return None
    return model.feature_extractor
