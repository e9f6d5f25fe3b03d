"""Transcription of audio files, folders, Kaldi lists and lhotse manifests with a trained model.

``api`` (the :class:`~xasr.transcribe.api.Transcriber`), ``inputs`` (what to transcribe),
``audio`` (loading, down-mix, resampling), ``vad`` (energy VAD and segmentation),
``batching`` (features and padded batches), ``writers`` (output files and resuming).
"""
