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

"""The ``hacluster`` console script."""

import sys

from cliff import app
from cliff import commandmanager

from hacluster import version

NAMESPACE = 'hacluster.cli'


class HAClusterApp(app.App):
    """cliff application whose commands come from :data:`NAMESPACE`."""

    NAME = 'hacluster'

    def __init__(self, stdin=None, stdout=None, stderr=None):
        super().__init__(
            description='hacluster: active-active coordination for '
                        'OpenStack manila-share',
            version=version.__version__,
            command_manager=commandmanager.CommandManager(NAMESPACE),
            stdin=stdin, stdout=stdout, stderr=stderr,
            deferred_help=True)


def main(argv=None, stdout=None, stderr=None):
    """Run one ``hacluster`` command line.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :param stdout, stderr: streams to use instead of the process's.
    :returns: the exit status (int): the command's, 0 after ``--help``,
        2 for a usage error (3 for any failure of ``check``).
    """
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    # A monitoring check must answer UNKNOWN (3) for any failure of its own,
    # usage errors included: 1 and 2 mean WARNING and CRITICAL to Nagios.
    failure = 3 if argv and argv[0] == 'check' else 2
    try:
        code = HAClusterApp(stdout=stdout, stderr=stderr).run(argv)
    except SystemExit as exc:        # --help (cliff's HelpExit), usage
        code = exc.code                # errors (argparse's exit(2))
        if code is None:               # a plain exit: success (--help)
            code = 0
        elif not isinstance(code, int):
            code = failure
        if code != 0 and failure == 3:
            code = 3
    return code


if __name__ == '__main__':
    sys.exit(main())
