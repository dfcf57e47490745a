import sys

from poller.cli.main import main

sys.exit(main())
