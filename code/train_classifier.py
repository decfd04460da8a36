"""Pipeline step script: train_classifier (see videoanom.steps.train_classifier)."""

import sys

from videoanom.steps.common import run_step
from videoanom.steps.train_classifier import main

if __name__ == "__main__":
    sys.exit(run_step(main))
