"""``python -m fastrnn``: same as the ``fastrnn`` console script."""
import sys

from fastrnn.cli import main

sys.exit(main())
