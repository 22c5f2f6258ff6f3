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

"""What every hacluster command shares: its help epilog."""


class OwnEpilog:
    """Mixin (first base) for hacluster's cliff commands.

    cliff's ``Command.get_epilog`` also names the distribution that
    provides a command when it is not the application's own, and to know
    that it maps every installed distribution to its modules
    (``importlib.metadata.packages_distributions``): 0.2-0.35 s in a
    virtualenv with manila, paid by every run of every command -- a third
    of ``hacluster status`` at 10,000 locks, and by ``hacluster check``
    every time monitoring calls it. hacluster's commands are all
    hacluster's own, so the epilog is the command's ``_epilog`` and its
    hooks', as cliff's, without that line. No I/O; thread-safe.
    """

    def get_epilog(self):
        parts = [self._epilog or '']
        parts.extend(e for e in (h.obj.get_epilog() for h in self._hooks
                                 if h.obj is not None) if e)
        return '\n\n'.join(parts)
