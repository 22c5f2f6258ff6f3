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

# hacluster release notes build configuration file.
#
# Build: tox -e releasenotes (reno reads the notes in
# releasenotes/notes/ from git: a note shows once it is committed).

# -- General configuration ------------------------------------------------

extensions = [
    'reno.sphinxext',
]

# openstackdocstheme when it is installed (doc/requirements.txt), Sphinx's
# default theme otherwise.
try:
    import openstackdocstheme  # noqa: F401
except ImportError:
    html_theme = 'alabaster'
else:
    extensions.append('openstackdocstheme')
    html_theme = 'openstackdocs'
    openstackdocs_use_storyboard = False
    openstackdocs_auto_name = False

templates_path = []
source_suffix = '.rst'
master_doc = 'index'

project = 'hacluster Release Notes'
copyright = 'hacluster developers'

# Release notes are version independent.
version = ''
release = ''

exclude_patterns = []
pygments_style = 'native'

# -- Options for HTML output ----------------------------------------------

html_static_path = []
htmlhelp_basename = 'haclusterReleaseNotesdoc'

# -- Options for Internationalization output ------------------------------
locale_dirs = ['locale/']
