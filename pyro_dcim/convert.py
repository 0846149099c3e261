"""``python -m pyro_dcim.convert``: rewrite trusted files of older versions as plain data that loads
with ``weights_only=True`` (the command is :mod:`pyro_dcim.cli.convert`).

Only an entry point: it starts the command before torch is imported, so that a Ctrl-C
while the imports load is one line and exit status 130.
"""

if __name__ == "__main__":
    from .cli import launch

    launch("convert")
else:  # ``from pyro_dcim.convert import main``
    from .cli.convert import *  # noqa: F401,F403
