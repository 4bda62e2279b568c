"""`python -m bukt ...` is the `bukt` command (bukt/cli/__init__.py); `bukt serve` starts its
children this way, with the interpreter it runs on."""
import sys

from bukt.cli import main

sys.exit(main())
