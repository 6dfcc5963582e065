"""Command line: `python -m store_server.positioning predict|evaluate|record-survey ...`."""

try:
    from store_server.positioning.cli import main
except KeyboardInterrupt:
    # Loading numpy, pandas and shapely takes seconds: a Ctrl-C then is one line too.
    import sys

    sys.stderr.write("positioning: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
