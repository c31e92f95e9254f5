"""Run the mlx-specdec CLI from a checkout: ``python cli.py generate --prompt "Hi"``."""

from mlx_specdec.cli.app import main

if __name__ == "__main__":
    main()
