"""`python -m tunespec`: the same command line as `tunespec`."""
import sys

from .cli.main import main

sys.exit(main())
