import sys

from tokenvoy.cli import main

sys.exit(main())
