"""Small helpers shared by the test modules."""
import socket

from noisylab.config import build_config


def config_with(base: dict, **over):
    """Validate ``base`` after setting each dotted key of ``over`` (``"train.epochs": 2``)."""
    for key, value in over.items():
        node = base
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return build_config(base)


def free_port() -> int:
    """A free TCP port on the loopback interface, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
