"""Allow ``python -m regcleaner``."""

from regcleaner.cli import main

main()
