"""Feature-space probing (FINALLY §3): Clustering rule and SNR rule over extractors."""
