"""Run the eventmail command: python -m eventmail."""

from eventmail.cli import main

raise SystemExit(main())
