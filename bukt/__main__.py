"""`python -m bukt ...` is the `bukt` command (bukt/cli.py); `bukt serve` starts its
children this way, with the interpreter it runs on."""
import sys

from bukt.cli import main

sys.exit(main())
