"""``hwnas device profile`` and ``hwnas device eval`` (filled in by the predictor work)."""

from __future__ import annotations

from nas.cli._base import BaseCommand

DEVICE_SUBCOMMANDS: tuple[type[BaseCommand], ...] = ()
