"""python -m ephemera_cli"""

import sys

from ephemera_cli.main import main

sys.exit(main())
