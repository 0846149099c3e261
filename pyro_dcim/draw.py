"""``python -m pyro_dcim.draw``: draw generated digits from a trained run (the command is :mod:`pyro_dcim.cli.draw`).

Only an entry point: it starts the command before torch is imported, so that a Ctrl-C
while the imports load is one line and exit status 130.
"""

if __name__ == "__main__":
    from .cli import launch

    launch("draw")
else:  # ``from pyro_dcim.draw import main`` as before
    from .cli.draw import *  # noqa: F401,F403
