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

# hacluster documentation build configuration file.
#
# Build: tox -e docs, or sphinx-build -W -b html doc/source doc/build/html
# (the CLI and configuration references are generated from the installed
# package's entry points: install hacluster first).

import os
import re
import sys

from cliff import sphinxext as cliff_sphinxext
from docutils import statemachine

sys.path.insert(0, os.path.abspath('../..'))

# -- General configuration ----------------------------------------------------

extensions = [
    'cliff.sphinxext',
    'oslo_config.sphinxext',
]

# openstackdocstheme when it is installed (doc/requirements.txt), Sphinx's
# default theme otherwise (the unit test builds the docs with Sphinx alone).
try:
    import openstackdocstheme  # noqa: F401
except ImportError:
    html_theme = 'alabaster'
else:
    extensions.append('openstackdocstheme')
    html_theme = 'openstackdocs'
    openstackdocs_use_storyboard = False
    openstackdocs_auto_name = False
    openstackdocs_pdf_link = False

# cliff.sphinxext: the program name shown in the CLI reference
autoprogram_cliff_application = 'hacluster'


# cliff.sphinxext parses the commands' descriptions and argument help as
# reStructuredText. The help texts are written for the terminal ("*.py",
# "share-*"), where a lone "*" would be an unterminated emphasis (a warning,
# so an error with -W): render "*" outside ``literals`` as itself.
_LITERAL = re.compile(r'(``.*?``)', re.DOTALL)


def _plain_stars(text):
    parts = _LITERAL.split(text)
    return ''.join(part if i % 2 else part.replace('*', r'\*')
                   for i, part in enumerate(parts))


class _HelpText:
    """docutils.statemachine as cliff.sphinxext uses it, "*" escaped."""

    def __getattr__(self, name):
        return getattr(statemachine, name)

    @staticmethod
    def string2lines(text, *args, **kwargs):
        return statemachine.string2lines(_plain_stars(text), *args, **kwargs)


cliff_sphinxext.statemachine = _HelpText()

templates_path = []
source_suffix = '.rst'
master_doc = 'index'

project = 'hacluster'
copyright = 'hacluster developers'

exclude_patterns = []
pygments_style = 'native'

# -- Options for HTML output --------------------------------------------------

html_static_path = []
htmlhelp_basename = 'haclusterdoc'
