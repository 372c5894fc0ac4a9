"""Subcommands of this package for the `jingbao` command line."""

from __future__ import annotations

import argparse

from asr import model_cli


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each sets `func`)."""
    model_cli.register(sub)
