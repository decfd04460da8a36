"""Pipeline step script: register_classifier (see videoanom.steps.register_classifier)."""

import sys

from videoanom.steps.common import run_step
from videoanom.steps.register_classifier import main

if __name__ == "__main__":
    sys.exit(run_step(main))
