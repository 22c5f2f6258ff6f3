# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""hacluster's own version and the protocol version of its etcd key layout."""


def _version():
    """The installed distribution's version, as pbr made it from git.

    pbr derives it at build/install time (``0.1.0.devN`` for the Nth
    untagged commit after the last tag; the tag itself once released) and
    records it in the distribution's metadata; :class:`pbr.version.VersionInfo`
    reads it back. Without pbr, the metadata is read directly; in a tree
    that is neither installed nor a git checkout, the version is unknown.
    """
    try:
        from pbr import version as pbr_version
    except ImportError:
        pbr_version = None
    if pbr_version is not None:
        try:
            return pbr_version.VersionInfo('hacluster').release_string()
        except Exception:   # not installed and no git checkout: below
            pass
    try:
        from importlib import metadata
        return metadata.version('hacluster')
    except Exception:
        return '0+unknown'


#: The full version, e.g. ``0.1.0.dev91`` (what member records and
#: ``hacluster --version`` show).
__version__ = _version()

#: Version of the etcd key layout and record formats. Part of every key
#: (``/hacluster/v1/...``) so a future incompatible layout can live beside
#: this one during a rolling upgrade.
KEY_LAYOUT_VERSION = 1
