"""Short English phrases for synthetic speech (espeak-ng/flite): probe groups, training data."""

from __future__ import annotations

TTS_PHRASES = [
    "she sells sea shells",
    "a quiet morning",
    "open the window",
    "seven green boats",
    "the light is blue",
    "bring me water",
    "we walked home",
    "many small stones",
    "fish swim fast",
    "good night moon",
    "the red door",
    "under the bridge",
]
