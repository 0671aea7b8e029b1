"""``python -m thumbdet``: the ``thumbdet`` command."""

import sys

from thumbdet.cli import main

sys.exit(main())
