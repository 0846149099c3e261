"""``python -m pyro_dcim.likelihood``: the generator's log-likelihood by AIS
(the command is :mod:`pyro_dcim.cli.likelihood`).

Only an entry point: it starts the command before torch is imported, so that a Ctrl-C
while the imports load is one line and exit status 130.
"""

if __name__ == "__main__":
    from .cli import launch

    launch("likelihood")
else:  # ``from pyro_dcim.likelihood import main`` as before
    from .cli.likelihood import *  # noqa: F401,F403
