"""The training loop on accelerate: G/D steps, checkpoints, resume, logs, validation."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from finally_cli.errors import ConfigError, TrainingError
from finally_cli.models.discriminators import MultiScaleSTFTDiscriminator
from finally_cli.training import checkpoint as ckpt
from finally_cli.training import run_folder
from finally_cli.training.config import TrainConfig, diff, from_dict
from finally_cli.training.data import pair_dataset
from finally_cli.training.losses import (
    CompressedSpectralLoss,
    PesqLoss,
    SiSdrLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    utmos_available,
)
from finally_cli.training.model_setup import build_generator, build_lmos

log = logging.getLogger(__name__)
StepFn = Callable[[int, dict[str, float]], None]


class Trainer:
    """Runs one stage of `config` in `run_dir` (created, or resumed with `resume=True`).

    Args:
        config: the stage configuration.
        run_dir: where checkpoints, logs and exports go.
        resume: continue from the newest readable checkpoint in `run_dir` (same config
            required); a run killed before its first checkpoint starts again at step 0.
        overwrite: start a new run where a previous one was, removing that run's own files
            (run_folder.RUN_FILES, checkpoints, best/, tensorboard events) and nothing else.
    """

    def __init__(
        self, config: TrainConfig, run_dir: Path, resume: bool = False, overwrite: bool = False
    ) -> None:
        from accelerate import Accelerator

        self.config = config
        self.run_dir = Path(run_dir)
        cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(
            cpu=cpu, mixed_precision=config.precision, gradient_accumulation_steps=config.grad_accum
        )
        self._check_run_dir(resume, overwrite)
        torch.manual_seed(config.seed)
        self.generator = build_generator(config)
        self.lmos = build_lmos(config, self.generator)
        self._check_features(resume)
        trainable = [p for p in self.generator.parameters() if p.requires_grad]
        groups = [
            {
                "params": [
                    p
                    for n, p in self.generator.named_parameters()
                    if p.requires_grad and not n.startswith("ssl.")
                ]
            }
        ]
        ssl_params = [
            p
            for n, p in self.generator.named_parameters()
            if p.requires_grad and n.startswith("ssl.")
        ]
        if ssl_params:
            groups.append(
                {
                    "params": ssl_params,
                    "lr": config.optim.lr * self.generator.config.ssl.lr_multiplier,
                }
            )
        assert sum(len(g["params"]) for g in groups) == len(trainable)
        self.opt_g = torch.optim.AdamW(
            groups,
            lr=config.optim.lr,
            betas=config.optim.betas_g,
            weight_decay=config.optim.weight_decay,
        )
        self.use_gan = config.loss.gan > 0 or config.loss.fm > 0
        self.discriminator = None
        self.opt_d = None
        if self.use_gan:
            self.discriminator = MultiScaleSTFTDiscriminator(
                config.sample_rate, config.loss.disc_filters
            )
            self.opt_d = torch.optim.AdamW(
                self.discriminator.parameters(),
                lr=config.optim.lr_d,
                betas=config.optim.betas_d,
                weight_decay=config.optim.weight_decay,
            )
        self.spectral = (
            CompressedSpectralLoss(
                exponent=config.loss.spectral_exponent,
                complex_weight=config.loss.spectral_complex,
                asymmetry=config.loss.spectral_asymmetry,
                distance=config.loss.spectral_distance,
                erb_weighting=config.loss.spectral_erb,
                sample_rate=config.sample_rate,
            )
            if config.loss.spectral > 0
            else None
        )
        self.sisdr = SiSdrLoss(config.loss.sisdr_max_db) if config.loss.sisdr > 0 else None
        self.pesq = PesqLoss(config.sample_rate) if config.loss.pesq > 0 else None
        if config.loss.utmos > 0:
            utmos_available()
        self.ema = None
        if config.optim.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(config.optim.ema)
            )
            self.ema.requires_grad_(False)
        self.step = 0
        self.best = -math.inf
        if resume:
            self._resume()
        # The LMOS feature encoder is frozen: moved, not wrapped (DDP refuses modules
        # without trainable parameters).
        self.lmos = self.lmos.to(self.accelerator.device)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        self.generator, self.opt_g = self.accelerator.prepare(self.generator, self.opt_g)
        if self.discriminator is not None:
            self.discriminator, self.opt_d = self.accelerator.prepare(
                self.discriminator, self.opt_d
            )
        self.writer = self._writer()

    # -- setup ---------------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool, overwrite: bool) -> None:
        saved = self.run_dir / "config.json"
        if resume and overwrite:
            raise ConfigError(f"{self.run_dir}: give --resume or --overwrite, not both")
        if resume:
            if not saved.is_file():
                raise ConfigError(f"{self.run_dir}: nothing to resume (no config.json)")
            changed = diff(_with_defaults(json.loads(saved.read_text())), self.config.to_dict())
            if changed:
                raise ConfigError(
                    f"{self.run_dir}: config differs from the run's, refusing to "
                    f"resume; changed keys: {', '.join(changed)}"
                )
            return
        # A new run never appends to a previous run's logs nor replaces its config silently.
        previous = run_folder.check_new_run(self.run_dir, overwrite)
        # Every process checks before the main one writes (else the others would find
        # its config.json); only the main process writes into the run folder.
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if previous:
                run_folder.remove_run_files(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(self.config.to_dict(), indent=2))

    def _check_features(self, resume: bool) -> None:
        """Record the LMOS feature space `auto` resolved to; refuse to resume in another one
        (installing or removing the `pretrained` extra would otherwise change the loss)."""
        record = self.run_dir / "lmos_features.txt"
        resolved = self.lmos.resolved_features
        if resume and record.is_file():
            started = record.read_text(encoding="utf-8").strip()
            if started != resolved:
                raise ConfigError(
                    f"{self.run_dir}: the run's LMOS features were {started}, here they resolve "
                    f"to {resolved}; set loss.features={started} in a fresh run or install what "
                    "provided them"
                )
            return
        if self.accelerator.is_main_process:
            record.write_text(resolved + "\n", encoding="utf-8")

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules = {"generator": self.accelerator.unwrap_model(self.generator)}
        if self.discriminator is not None:
            modules["discriminator"] = self.accelerator.unwrap_model(self.discriminator)
        if self.ema is not None:
            modules["ema"] = self.ema.module
        return modules

    def _model(self) -> torch.nn.Module:
        """The generator validation scores and exports: the moving average when kept."""
        if self.ema is not None:
            return self.ema.module
        return self.accelerator.unwrap_model(self.generator)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"optimizer_g": self.opt_g}
        if self.opt_d is not None:
            optimizers["optimizer_d"] = self.opt_d
        return optimizers

    def _resume(self) -> None:
        if self.accelerator.is_main_process:
            for stale in ckpt.remove_stale_tmp(self.run_dir):
                log.info("removed %s, half-written when the run was stopped", stale)
        loaded = ckpt.load_newest(self.run_dir, self._modules(), self._optimizers())
        if loaded is None:  # killed before its first checkpoint: the same as a fresh start
            log.warning("%s: no checkpoint yet; starting at step 0", self.run_dir)
            if self.accelerator.is_main_process:
                run_folder.truncate_logs(self.run_dir, 0)
            return
        folder, state = loaded
        saved, world = state.get("num_processes"), self.accelerator.num_processes
        if saved is not None and saved != world:
            # The global batch (batch_size × grad_accum × processes) and each process's
            # share of the pair stream depend on the process count: another count would
            # not continue the run that was saved.
            raise ConfigError(
                f"{self.run_dir}: {folder.name} was trained by {saved} process"
                f"{'es' if saved > 1 else ''}, this launch has {world}; resume with "
                f"{saved} (the global batch and the pair order depend on it) or start a new run"
            )
        self.step = int(state["step"])
        self.best = float(state.get("best", -math.inf))
        if self.ema is not None:  # it averages once per step (the first one copies)
            self.ema.n_averaged.fill_(self.step)
        log.info("resumed %s at step %d", folder, self.step)
        if self.accelerator.is_main_process:
            run_folder.truncate_logs(self.run_dir, self.step)

    def _writer(self):  # noqa: ANN202
        if not self.accelerator.is_main_process:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: only metrics.jsonl is written")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)

    def _loader(self) -> torch.utils.data.DataLoader:
        cfg = self.config
        model = self.accelerator.unwrap_model(self.generator)
        per_step = cfg.batch_size * cfg.grad_accum
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        total = cfg.steps * per_step * world
        dataset = pair_dataset(
            cfg, total, model.factor, model.length_multiple, peak_limit=model.peak_limit
        )
        # Process `rank` takes items [k·world + rank] of the global stream, in order, so a
        # resumed run at step s continues with exactly the items an uninterrupted one would.
        start = self.step * per_step * world
        sampler = _ListSampler(range(start + rank, total, world))
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            drop_last=True,
            persistent_workers=cfg.data.num_workers > 0,
        )

    def learning_rate_factor(self) -> float:
        return self.config.optim.gamma ** (self.step // self.config.optim.decay_every)

    def _set_lr(self) -> None:
        factor = self.learning_rate_factor()
        base = self.config.optim
        ssl_mult = self.accelerator.unwrap_model(self.generator).config.ssl.lr_multiplier
        for i, group in enumerate(self.opt_g.param_groups):
            group["lr"] = base.lr * factor * (ssl_mult if i == 1 else 1.0)
        if self.opt_d is not None:
            for group in self.opt_d.param_groups:
                group["lr"] = base.lr_d * factor

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimiser step of D (×d_steps) and G over `grad_accum` micro-batches."""
        cfg, acc = self.config, self.accelerator
        self._set_lr()
        self.generator.train()
        logs: dict[str, float] = {}
        fakes = []
        for batch in batches:
            with acc.autocast():
                fakes.append(self.generator(batch["noisy"]))
        if self.discriminator is not None:
            self.discriminator.requires_grad_(True)
            for _ in range(cfg.optim.d_steps):
                self.opt_d.zero_grad(set_to_none=True)
                for batch, fake in zip(batches, fakes):
                    with acc.autocast():
                        real_logits, _ = self.discriminator(batch["clean"])
                        fake_logits, _ = self.discriminator(fake.detach())
                        loss_d = discriminator_loss(real_logits, fake_logits) / len(batches)
                    acc.backward(loss_d)
                    logs["loss_d"] = (
                        logs.get("loss_d", 0.0) + float(loss_d.detach()) / cfg.optim.d_steps
                    )
                acc.clip_grad_norm_(self.discriminator.parameters(), cfg.optim.grad_clip)
                self.opt_d.step()
            self.discriminator.requires_grad_(False)  # G's losses must not reach D
        self.opt_g.zero_grad(set_to_none=True)
        for batch, fake in zip(batches, fakes):
            with acc.autocast():
                terms = self.lmos(fake, batch["clean"]) if cfg.loss.lmos > 0 else {}
                total = cfg.loss.lmos * sum(terms.values()) if terms else fake.new_zeros(())
                if self.spectral is not None:
                    terms["spectral"] = cfg.loss.spectral * self.spectral(fake, batch["clean"])
                    total = total + terms["spectral"]
                if self.sisdr is not None:
                    terms["sisdr"] = cfg.loss.sisdr * self.sisdr(fake, batch["clean"])
                    total = total + terms["sisdr"]
                if self.discriminator is not None:
                    # The unwrapped D: no DDP hooks while its parameters are frozen.
                    plain = acc.unwrap_model(self.discriminator)
                    fake_logits, fake_maps = plain(fake)
                    with torch.no_grad():
                        _, real_maps = plain(batch["clean"])
                    terms["gan"] = cfg.loss.gan * generator_loss(fake_logits)
                    terms["fm"] = cfg.loss.fm * feature_matching_loss(real_maps, fake_maps)
                    total = total + terms["gan"] + terms["fm"]
                if self.pesq is not None and self.pesq.available:
                    terms["pesq"] = cfg.loss.pesq * self.pesq(fake, batch["clean"])
                    total = total + terms["pesq"]
            acc.backward(total / len(batches))
            for key, value in terms.items():
                logs[key] = logs.get(key, 0.0) + float(value.detach()) / len(batches)
            logs["loss_g"] = logs.get("loss_g", 0.0) + float(total.detach()) / len(batches)
        logs["grad_norm_g"] = float(
            acc.clip_grad_norm_(
                [p for p in self.generator.parameters() if p.requires_grad], cfg.optim.grad_clip
            )
        )
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update_parameters(acc.unwrap_model(self.generator))
        logs["lr"] = self.opt_g.param_groups[0]["lr"]
        return logs

    # -- loop ----------------------------------------------------------------------------------
    def fit(self, on_step: StepFn | None = None) -> int:
        """Train until `config.steps`; returns the final step."""
        cfg, acc = self.config, self.accelerator
        if self.step >= cfg.steps:
            return self.step
        loader = iter(self._loader())
        metrics = (
            (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")
            if acc.is_main_process
            else None
        )
        started = time.perf_counter()
        try:
            while self.step < cfg.steps:
                batches = []
                for _ in range(cfg.grad_accum):
                    batch = next(loader)
                    batches.append({k: v.to(acc.device) for k, v in batch.items()})
                logs = self._mean_over_processes(self.train_step(batches))
                if not all(math.isfinite(v) for v in logs.values()):
                    raise TrainingError(
                        f"{self.run_dir}: non-finite loss at step {self.step + 1} "
                        f"({', '.join(f'{k}={v:.4g}' for k, v in logs.items())}); "
                        + self._stopped()
                    )
                self.step += 1
                logs["steps_per_second"] = 1.0 / max(time.perf_counter() - started, 1e-9)
                started = time.perf_counter()
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(logs, metrics)
                if on_step is not None:
                    on_step(self.step, logs)
                if cfg.data.validation and (
                    self.step % cfg.validate_every == 0 or self.step == cfg.steps
                ):
                    self.validate()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
        finally:
            if metrics is not None:
                metrics.close()
            if self.writer is not None:
                self.writer.flush()
        return self.step

    def _mean_over_processes(self, logs: dict[str, float]) -> dict[str, float]:
        """Losses of the global batch: each process's values averaged (they differ, having seen
        different pairs; the gradient norm and learning rate are already the same everywhere).
        Every process then takes the same decisions, e.g. stopping on a non-finite loss."""
        if self.accelerator.num_processes == 1:
            return logs
        keys = sorted(logs)
        local = torch.tensor([logs[k] for k in keys], dtype=torch.float64)
        mean = self.accelerator.reduce(local.to(self.accelerator.device), reduction="mean")
        return dict(zip(keys, mean.cpu().tolist()))

    def _log(self, logs: dict[str, float], metrics) -> None:  # noqa: ANN001
        if metrics is None:
            return
        metrics.write(json.dumps({"step": self.step, **logs}) + "\n")
        metrics.flush()
        if self.writer is not None:
            for key, value in logs.items():
                self.writer.add_scalar(f"train/{key}", value, self.step)

    def _stopped(self) -> str:
        kept = ckpt.checkpoints(self.run_dir)
        if kept:
            return f"stopped with {kept[-1].name} as the newest checkpoint"
        return "stopped before any checkpoint was saved"

    def save(self) -> Path | None:
        self.accelerator.wait_for_everyone()
        # Last guard: a NaN/Inf weight with finite losses (e.g. from the optimiser's update)
        # is never written. Every process checks (DDP keeps the weights equal), so all stop.
        for name, module in self._modules().items():
            for key, tensor in module.state_dict().items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise TrainingError(
                        f"{self.run_dir}: non-finite weights at step {self.step} "
                        f"({name}.{key}); nothing saved, {self._stopped()}"
                    )
        if not self.accelerator.is_main_process:
            return None
        folder = self.run_dir / "checkpoints" / f"step_{self.step:08d}"
        generator = self.accelerator.unwrap_model(self.generator)
        (self.run_dir / "model_config.json").write_text(
            json.dumps(generator.config.to_dict(), indent=2)
        )
        ckpt.save_checkpoint(
            folder,
            self._modules(),
            self._optimizers(),
            {
                "step": self.step,
                "best": self.best,
                "num_processes": self.accelerator.num_processes,
            },
        )
        ckpt.prune(self.run_dir, self.config.keep_checkpoints, self.step)
        return folder

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """PESQ/ESTOI (+ DNSMOS) on the fixed validation set; the best `best_metric` score is
        exported to best/."""
        from finally_cli.evaluation.metrics import column_direction
        from finally_cli.training.validation import run_validation

        if not self.accelerator.is_main_process:
            return {}
        generator = self._model()
        scores, samples = run_validation(
            generator,
            Path(self.config.data.validation),
            self.config.validation_files,
            self.config.validation_dnsmos,
            self.accelerator.device,
            self.config.audio_samples,
        )
        self.generator.train()
        with (self.run_dir / "validation.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": self.step, **scores}) + "\n")
        if self.writer is not None:
            for key, value in scores.items():
                self.writer.add_scalar(f"val/{key}", value, self.step)
            for i, (noisy, enhanced, rate) in enumerate(samples):
                self.writer.add_audio(
                    f"val/enhanced_{i}",
                    torch.from_numpy(enhanced)[None],
                    self.step,
                    sample_rate=rate,
                )
                self.writer.add_audio(
                    f"val/noisy_{i}", torch.from_numpy(noisy)[None], self.step, sample_rate=rate
                )
                self.writer.add_figure(
                    f"val/spectrogram_{i}", _spectrogram(enhanced, rate), self.step
                )
        score = scores.get(self.config.best_metric, -math.inf)
        if not column_direction(self.config.best_metric):  # lower is better (lsd)
            score = -score
        if np.isfinite(score) and score > self.best:
            self.best = score
            from finally_cli.training.export import export_model

            export_model(
                self.run_dir,
                self.run_dir / "best",
                generator=generator,
                step=self.step,
                extra={"validation": scores},
            )
        return scores


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, indices: range) -> None:
        self.indices = indices

    def __iter__(self):  # noqa: ANN204
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _with_defaults(saved: dict) -> dict:
    """A run's saved config with the options added to finally-cli since at their defaults
    (they did not exist, so the run trained as their defaults do)."""
    try:
        return from_dict(saved).to_dict()
    except (ConfigError, TypeError):  # an option since removed: compared as saved
        return saved


def _spectrogram(audio: np.ndarray, rate: int):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.specgram(audio, NFFT=1024, Fs=rate, noverlap=768, cmap="magma")
    ax.set_xlabel("s")
    ax.set_ylabel("Hz")
    fig.tight_layout()
    return fig


__all__ = ["Trainer"]
