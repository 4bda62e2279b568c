import sys

from bukt.tcp import main

sys.exit(main())
