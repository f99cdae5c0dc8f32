"""``python -m attnkern.demo`` (also under ``torchrun``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
