"""A small share driver with one lock of each kind, for the CLI tests."""

import threading

from oslo_concurrency import lockutils

from manila import coordination
from manila import utils


class FixtureShareDriver(object):

    def __init__(self):
        self._cache = {}
        self._cache_lock = threading.Lock()

    @utils.synchronized('fixture-create', external=True)
    def create_share(self, context, share, share_server=None):
        return self._backend_create(share)

    def extend_share(self, share, new_size, share_server=None):
        with lockutils.lock('fixture-share-%s' % share['id'], external=True):
            self._backend_extend(share, new_size)

    @coordination.synchronized('fixture-{share.id}')
    def delete_share(self, context, share, share_server=None):
        self._backend_delete(share)

    def _cached(self, key):
        with self._cache_lock:
            return self._cache.get(key)
