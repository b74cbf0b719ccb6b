import sys

from coderig.cli import main

sys.exit(main())
