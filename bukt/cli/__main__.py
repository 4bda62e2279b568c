"""`python -m bukt.cli ...` is the `bukt` command, as `python -m bukt` is."""
import sys

from bukt.cli import main

sys.exit(main())
