"""pegasus-bench: the engine (CLI, config, data, training, scoring, runners, tables)."""

__version__ = "0.1.0"
