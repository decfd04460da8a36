"""Pipeline step script: register_prednet (see videoanom.steps.register_prednet)."""

import sys

from videoanom.steps.common import run_step
from videoanom.steps.register_prednet import main

if __name__ == "__main__":
    sys.exit(run_step(main))
