"""OpenAI's duration format for ``x-ratelimit-reset-*`` headers: ``20ms``, ``1.5s``, ``6m0s``."""

from __future__ import annotations


def openai_duration(seconds: float) -> str:
    """``0.02`` -> ``20ms``; ``1.5`` -> ``1.5s``; ``360`` -> ``6m0s``; ``3725`` -> ``1h2m5s``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"
