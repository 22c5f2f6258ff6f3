"""Test support for hacluster.

:mod:`hacluster.testing.servers` starts private etcd and RabbitMQ servers
on free loopback ports with their data in temporary directories, for the
functional tests (see ``tests/conftest.py``).  Nothing in this package is
imported by hacluster itself.
"""
