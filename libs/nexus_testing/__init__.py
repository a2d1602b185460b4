"""Test helpers shared by every service's tests: real etcd, real uvicorn servers, free ports."""

from .etcd import EtcdServer, etcd_binary
from .net import free_port, wait_for_http, wait_until
from .procs import ServiceProcess
from .servers import UvicornThread

__all__ = [
    "EtcdServer",
    "ServiceProcess",
    "UvicornThread",
    "etcd_binary",
    "free_port",
    "wait_for_http",
    "wait_until",
]
