"""Pipeline step script: prepare one location's frames (see videoanom.steps.data_prep)."""

import sys

from videoanom.steps.common import run_step
from videoanom.steps.data_prep import main

if __name__ == "__main__":
    sys.exit(run_step(main))
