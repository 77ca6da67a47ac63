"""Alias of ``edge-agent eval`` (the full evaluation: baselines, plots, goals), kept for old commands.

    python -m models.eval_ped2 --data ../shared/data/ucsd-ped2 [edge-agent eval's options]
"""

from __future__ import annotations

import sys

from agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["eval", *sys.argv[1:]]))
