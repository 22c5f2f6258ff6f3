"""hacluster's own version and the protocol version of its etcd key layout."""

__version__ = '0.1.0'

#: Version of the etcd key layout and record formats. Part of every key
#: (``/hacluster/v1/...``) so a future incompatible layout can live beside
#: this one during a rolling upgrade.
KEY_LAYOUT_VERSION = 1
