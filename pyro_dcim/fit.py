"""``python -m pyro_dcim.fit``: train a DCIM (the command is :mod:`pyro_dcim.cli.fit`).

Only an entry point: it starts the command before torch is imported, so that a Ctrl-C
while the imports load is one line and exit status 130.
"""

if __name__ == "__main__":
    from .cli import launch

    launch("fit")
else:  # ``from pyro_dcim.fit import main`` as before
    from .cli.fit import *  # noqa: F401,F403
