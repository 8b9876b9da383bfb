"""Allow ``python -m cellclass``."""

from cellclass.cli import main

raise SystemExit(main())
