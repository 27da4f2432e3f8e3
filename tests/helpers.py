"""Small helpers shared by the test modules."""
import socket

from noisylab.config import apply_settings, build_config


def config_with(base: dict, **over):
    """Validate ``base`` after setting each dotted key of ``over`` (``"train.epochs": 2``), as
    command-line overrides would (a new method or loss name starts its section afresh)."""
    return build_config(apply_settings(base, [((key.split("."), value), key) for key, value in over.items()]))


def free_port() -> int:
    """A free TCP port on the loopback interface, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
