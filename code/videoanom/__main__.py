"""``python -m videoanom``."""

import sys

from videoanom.cli import main

sys.exit(main())
