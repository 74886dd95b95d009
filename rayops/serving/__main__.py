import sys

from rayops.serving.cli import main

sys.exit(main())
