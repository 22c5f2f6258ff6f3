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

"""The packaging around the code: license headers, requirements, the sample
configuration file and the documentation build."""

import configparser
import importlib.machinery
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATOR_CONF = ROOT / 'etc' / 'hacluster' / 'hacluster-config-generator.conf'
SAMPLE = ROOT / 'etc' / 'hacluster' / 'hacluster.conf.sample'


def _license_headers():
    """tools/license-headers as a module (it has no .py suffix)."""
    path = str(ROOT / 'tools' / 'license-headers')
    loader = importlib.machinery.SourceFileLoader('license_headers', path)
    spec = importlib.util.spec_from_loader('license_headers', loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_python_file_has_the_license_header():
    lh = _license_headers()
    paths = [ROOT / p for p in lh.DEFAULT_PATHS if (ROOT / p).exists()]
    missing = [str(p.relative_to(ROOT)) for p in lh.python_files(paths)
               if lh.needs_header(p.read_text(encoding='utf-8'))]
    assert missing == [], 'run tools/license-headers'


def test_license_headers_script(tmp_path):
    lh = _license_headers()
    (tmp_path / 'plain.py').write_text('"""Doc."""\n\nimport os\n')
    (tmp_path / 'script.py').write_text(
        '#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(1)\n')
    (tmp_path / 'empty.py').write_text('')
    (tmp_path / 'done.py').write_text(lh.HEADER + '\nx = 1\n')
    fixtures = tmp_path / 'audit_fixtures'
    fixtures.mkdir()
    (fixtures / 'driver.py').write_text('import threading\n')
    (tmp_path / 'notes.txt').write_text('not python\n')
    before = {p.name: p.read_text() for p in tmp_path.rglob('*.*')}

    def run(*args):
        return subprocess.run(
            [sys.executable, str(ROOT / 'tools' / 'license-headers')] +
            list(args), capture_output=True, text=True)

    check = run('--check', str(tmp_path))
    assert check.returncode == 1
    assert sorted(pathlib.Path(line).name
                  for line in check.stdout.split()) == ['plain.py',
                                                        'script.py']
    assert run(str(tmp_path)).returncode == 0

    assert (tmp_path / 'plain.py').read_text() == (
        lh.HEADER + '\n' + before['plain.py'])
    assert (tmp_path / 'script.py').read_text() == (
        '#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\n' + lh.HEADER +
        '\nprint(1)\n')
    for name in ('empty.py', 'done.py', 'notes.txt'):
        assert (tmp_path / name).read_text() == before[name]
    assert (fixtures / 'driver.py').read_text() == 'import threading\n'
    # idempotent
    after = {p: p.read_text() for p in tmp_path.rglob('*.*')}
    assert run(str(tmp_path)).returncode == 0
    assert {p: p.read_text() for p in tmp_path.rglob('*.*')} == after
    assert run('--check', str(tmp_path)).returncode == 0
    # the header is the one hacking checks for (H102/H103), and the file
    # still compiles
    compile((tmp_path / 'script.py').read_text(), 'script.py', 'exec')
    assert lh.HEADER.startswith(
        '# Licensed under the Apache License, Version 2.0 (the "License");')


def _requirements(lines):
    out = []
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if line:
            out.append(re.sub(r'\s+', '', line))
    return out


def test_test_extra_matches_test_requirements():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    extra = _requirements(cfg['extras']['test'].splitlines())
    listed = _requirements(
        (ROOT / 'test-requirements.txt').read_text().splitlines())
    assert extra == listed, (
        'setup.cfg [extras] test and test-requirements.txt must list the '
        'same requirements (tools/bootstrap installs the extra, tox the '
        'file)')


def test_sphinx_and_reno_are_test_requirements():
    listed = _requirements(
        (ROOT / 'test-requirements.txt').read_text().splitlines())
    names = {re.split(r'[<>=!~\[;]', r, maxsplit=1)[0].lower()
             for r in listed}
    assert {'sphinx', 'reno'} <= names


def test_version_comes_from_pbr():
    from hacluster import version
    pbr_version = pytest.importorskip('pbr.version')
    assert version.__version__ == (
        pbr_version.VersionInfo('hacluster').release_string())
    assert re.match(r'^\d+\.\d+\.\d+', version.__version__)


def test_sample_config_is_up_to_date(tmp_path):
    out = tmp_path / 'hacluster.conf.sample'
    subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator',
         '--config-file', str(GENERATOR_CONF), '--output-file', str(out)],
        cwd=str(ROOT), check=True)
    assert out.read_text() == SAMPLE.read_text(), (
        'etc/hacluster/hacluster.conf.sample is stale: regenerate it with '
        'tox -e genconfig (oslo-config-generator --config-file '
        'etc/hacluster/hacluster-config-generator.conf)')


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip('sphinx')
    result = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-E',
         '-d', str(tmp_path / 'doctrees'), '-b', 'html',
         str(ROOT / 'doc' / 'source'), str(tmp_path / 'html')],
        cwd=str(ROOT), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ('index', 'install/index', 'admin/deploy', 'admin/monitor',
                 'admin/runbook', 'admin/migrate', 'drivers/index',
                 'configuration/index', 'cli/index'):
        assert (tmp_path / 'html' / (page + '.html')).is_file(), page
    cli = (tmp_path / 'html' / 'cli' / 'index.html').read_text()
    config = (tmp_path / 'html' / 'configuration' / 'index.html').read_text()
    assert 'claim late-clear' in cli and 'audit' in cli
    assert 'renew_deadline' in config and 'backend_url' in config
