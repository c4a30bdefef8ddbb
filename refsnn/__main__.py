import sys

from refsnn.cli import main

sys.exit(main())
