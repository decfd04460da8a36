"""Pipeline step script: batch_scoring (see videoanom.steps.batch_scoring)."""

import sys

from videoanom.steps.batch_scoring import main
from videoanom.steps.common import run_step

if __name__ == "__main__":
    sys.exit(run_step(main))
