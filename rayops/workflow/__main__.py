"""``python -m rayops.workflow run ...``: see rayops/workflow/cli.py."""

import sys

from rayops.workflow.cli import main

sys.exit(main())
