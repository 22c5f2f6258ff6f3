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

"""Retry delays with jitter.

After an etcd outage every node retries at once; with plain doubling they
would go on retrying in lockstep, each wave hitting etcd together. Every
retry loop in hacluster waits :func:`jittered` of its nominal delay: a
random time between half of it and all of it ("equal jitter"), so the
waves spread out while the average delay stays close to the nominal one.
"""

import random

_random = random.SystemRandom()


def jittered(delay):
    """A random wait in ``[delay / 2, delay]``. Thread-safe."""
    return _random.uniform(delay / 2.0, delay)


def doubled(delay, maximum):
    """The next nominal delay: twice ``delay``, at most ``maximum``."""
    return min(delay * 2, maximum)
