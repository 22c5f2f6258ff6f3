"""Test support for hacluster (nothing here is imported by hacluster itself).

* :mod:`hacluster.testing.process` -- process supervision and the lifecycle
  every private server shares; :mod:`~hacluster.testing.etcd`,
  :mod:`~hacluster.testing.rabbitmq`, :mod:`~hacluster.testing.postgres` --
  private servers on free loopback ports with their data in temporary
  directories (:mod:`~hacluster.testing.servers` re-exports them);
* :mod:`hacluster.testing.proxy` -- a TCP proxy a test can cut;
* :mod:`hacluster.testing.manila_rig`, ``manila_client``,
  ``manila_driver`` -- real manila-share nodes, a stand-in for manila-api
  and the scheduler, and an active-active DummyDriver.
"""
