import sys

from lcdsl.cli import main

sys.exit(main())
