"""`python -m digitnet.sweep.child ARGS_JSON`: a worker process of `digitnet sweep --jobs K`.

A module of its own so that TensorFlow is imported quietly before anything imports it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from digitnet.backend import import_tensorflow_quietly
    from digitnet.cli import report_progress

    report_progress()  # the table rows and warnings, as `digitnet sweep` shows them
    import_tensorflow_quietly()
    from digitnet.sweep.worker import main

    sys.exit(main(sys.argv[1:]))
