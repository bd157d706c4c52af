"""bigcode-cli: code completion from the shell with GPTBigCode models."""

__version__ = "0.1.0"
