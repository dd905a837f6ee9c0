"""`python -m airgap`: the same as the `airgap` console script."""

from airgap.cli import main

if __name__ == "__main__":
    main()
