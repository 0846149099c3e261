"""``python -m pyro_dcim.diagnose``: Gibbs sampling and ArviZ diagnostics of a trained run
(the command is :mod:`pyro_dcim.cli.diagnose`).

Only an entry point: it starts the command before torch is imported, so that a Ctrl-C
while the imports load is one line and exit status 130.
"""

if __name__ == "__main__":
    from .cli import launch

    launch("diagnose")
else:  # ``from pyro_dcim.diagnose import main`` as before
    from .cli.diagnose import *  # noqa: F401,F403
