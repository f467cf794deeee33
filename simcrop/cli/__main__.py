"""`python -m simcrop.cli ...`: the `simcrop` command, as torchrun and the tests start it."""
import sys

from simcrop.cli import main

if __name__ == "__main__":
    sys.exit(main())
