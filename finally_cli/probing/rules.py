"""The two probing rules of the FINALLY paper: Clustering rule and SNR rule."""

from __future__ import annotations

import numpy as np

from finally_cli.audio.mixing import mix_at_snr
from finally_cli.errors import ConfigError

# Below this peak a group counts as silent: noise mixed "at an SNR" into it is scaled to nothing.
SILENCE_PEAK = 1e-6


def check_groups_have_sound(segments: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """Raises ConfigError naming the first group whose segments are all silent.

    Args:
        segments: [segments, samples] audio. labels: [segments] group index. names: by index.
    """
    for group in np.unique(labels):
        if np.abs(segments[labels == group]).max() < SILENCE_PEAK:
            raise ConfigError(f"group {names[group]!r}: every segment is silent; nothing to probe")


def check_groups_differ(
    features: np.ndarray, labels: np.ndarray, names: list[str], extractor: str
) -> None:
    """Raises ConfigError naming two groups with identical features (K-means cannot split them).

    Args:
        features: [segments, dims]. labels: [segments] group index. names: by index.
    """
    seen: dict[frozenset[bytes], str] = {}
    for group in np.unique(labels):
        key = frozenset(row.tobytes() for row in features[labels == group])
        if key in seen:
            raise ConfigError(
                f"groups {seen[key]!r} and {names[group]!r}: identical {extractor} features "
                f"(the same clips?); the clustering rule cannot tell them apart"
            )
        seen[key] = names[group]


def clustering_rule(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """K-means with K = number of groups; Rand index and adjusted Rand index vs the groups."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, rand_score

    k = len(np.unique(labels))
    predicted = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(
        features.astype(np.float64)
    )
    return {
        "rand_index": float(rand_score(labels, predicted)),
        "adjusted_rand_index": float(adjusted_rand_score(labels, predicted)),
    }


def noisy_copies(
    segments: np.ndarray,
    noise: np.ndarray,
    snr_range: tuple[float, float] = (10.0, 20.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Every segment mixed with a random noise clip at an SNR drawn from `snr_range`."""
    rng = np.random.default_rng(seed)
    snrs = rng.uniform(*snr_range, size=len(segments))
    noisy = np.stack(
        [
            mix_at_snr(s, _fit(noise[rng.integers(0, len(noise))], s.size), snr)
            for s, snr in zip(segments, snrs)
        ]
    )
    return noisy, snrs


def _fit(clip: np.ndarray, samples: int) -> np.ndarray:
    if clip.size >= samples:
        return clip[:samples]
    return np.resize(clip, samples)


def snr_rule(
    clean_features: np.ndarray,
    noisy_features: np.ndarray,
    snrs: np.ndarray,
    labels: np.ndarray,
    names: list[str] | None = None,
) -> float:
    """Negative Spearman correlation between SNR and distance to the clean group centre.

    The distance of a noisy member's features to the mean of its group's clean features
    should fall as the SNR rises, so a well-structured space scores close to +1.
    Averaged over groups. With `names`, a group whose distances do not vary at all (the
    correlation is undefined) raises ConfigError naming it instead of being left out.
    """
    from scipy.stats import spearmanr

    scores = []
    for group in np.unique(labels):
        members = labels == group
        centre = clean_features[members].mean(axis=0)
        distance = np.linalg.norm(noisy_features[members] - centre, axis=1)
        rho = spearmanr(snrs[members], distance).statistic
        if np.isfinite(rho):
            scores.append(-rho)
        elif names is not None:
            raise ConfigError(
                f"group {names[group]!r}: its features do not change with the noise added, so "
                f"the SNR rule is undefined (silent or identical segments?)"
            )
    return float(np.mean(scores)) if scores else float("nan")


def synthetic_noise(count: int, samples: int, seed: int = 0) -> np.ndarray:
    """White, pink-ish and brown-ish noise clips."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        white = rng.standard_normal(samples)
        if i % 3 == 1:
            white = np.cumsum(white) * 0.05 + white  # tilt towards low frequencies
        elif i % 3 == 2:
            white = np.cumsum(white)
            white -= np.linspace(white[0], white[-1], samples)
        out.append((white / (np.abs(white).max() + 1e-9)).astype(np.float32))
    return np.stack(out)
