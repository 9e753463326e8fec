"""Entry script of the frozen desktop bundle: `sam-inspect` (see app/shell/desktop.py)."""

import multiprocessing
import sys

from app.shell.desktop import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not start the GUI again
    sys.exit(main())
