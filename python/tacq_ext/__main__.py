"""`python -m tacq_ext ...` is the `tacq` command."""

from .cli import main

raise SystemExit(main())
