"""``python -m pyro_dcim.sample``: the former name of ``python -m pyro_dcim.draw``
(the command is :mod:`pyro_dcim.cli.draw`).

Only an entry point: it starts the command before torch is imported, so that a Ctrl-C
while the imports load is one line and exit status 130.
"""

if __name__ == "__main__":
    from .cli import launch

    launch("sample")
else:  # ``from pyro_dcim.sample import main`` as before
    from .cli.draw import *  # noqa: F401,F403
