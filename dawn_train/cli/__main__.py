"""`python -m dawn_train.cli ...`: the same as `dawn-train ...` (sweeps and tests run it so)."""
import sys

from dawn_train.cli import console_main

sys.exit(console_main())
