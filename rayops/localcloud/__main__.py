import sys

from rayops.localcloud.cli import main

sys.exit(main())
