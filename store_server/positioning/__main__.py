"""Command line: `python -m store_server.positioning predict|evaluate|record-survey ...`."""

from store_server.positioning.cli import main

raise SystemExit(main())
