"""Pipeline step script: train (see videoanom.steps.train)."""

import sys

from videoanom.steps.common import run_step
from videoanom.steps.train import main

if __name__ == "__main__":
    sys.exit(run_step(main))
