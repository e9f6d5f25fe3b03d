"""Benchmarks of speech recognisers on test sets: accuracy with confidence intervals, speed,
paired significance tests, and Markdown / JSON / plot reports.

  - :mod:`xasr.benchmark.systems`   system specs (``xasr:``, ``faster-whisper:``, ``hf-whisper:``)
  - :mod:`xasr.benchmark.testsets`  cut manifests and Kaldi data directories, normalizer, language
  - :mod:`xasr.benchmark.chinese`   traditional characters in Chinese hypotheses
  - :mod:`xasr.benchmark.report`    statistics, tables, JSON, plot
  - :mod:`xasr.benchmark.run`       :func:`run_benchmark`, what ``xasr benchmark`` calls
"""
