"""`python -m dmp_cli` is `dmp`."""

from dmp_cli import main

main()
