"""xasr: LLM-based speech recognition. ``from xasr import Transcriber`` loads the API lazily."""


def __getattr__(name):  # lazy, so that importing xasr stays light
    if name == "Transcriber":
        from xasr.transcribe.api import Transcriber
        return Transcriber
    raise AttributeError(f"module 'xasr' has no attribute {name!r}")
