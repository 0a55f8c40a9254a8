"""``python -m bulkpatch.cli``: the same as the ``bulkpatch`` command."""

import sys

from bulkpatch.cli import main

sys.exit(main())
