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

"""The metrics options, names and text format, without servers."""

import socket
import urllib.error
import urllib.request

from oslo_config import cfg
from prometheus_client import parser as prom_parser
import pytest

import hacluster
from hacluster import exceptions
from hacluster import metrics
from hacluster import opts


def conf_from(tmp_path, text):
    path = tmp_path / 'hacluster.conf'
    path.write_text('[hacluster]\n' + text)
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], project='test', default_config_files=[str(path)])
    return conf


def test_metrics_are_off_by_default(tmp_path):
    settings = opts.metrics_settings(conf_from(tmp_path, ''))
    assert settings == opts.MetricsSettings('127.0.0.1', 0, None, 15.0)
    # nothing started, the coordinator not even looked at
    assert metrics.start_from_conf(object(), conf_from(tmp_path, '')) == []


def test_valid_metrics_options(tmp_path):
    settings = opts.metrics_settings(conf_from(
        tmp_path, 'metrics_port = 9464\nmetrics_host = ::\n'
                  'metrics_textfile = /var/lib/node_exporter/ha.prom\n'
                  'metrics_textfile_interval = 5\n'))
    assert settings == ('::', 9464, '/var/lib/node_exporter/ha.prom', 5.0)


@pytest.mark.parametrize('line,option,words', [
    ('metrics_port = 70000', 'metrics_port', 'less than or equal to 65535'),
    ('metrics_port = -1', 'metrics_port', 'greater than or equal to 0'),
    ('metrics_port = http', 'metrics_port', 'invalid literal'),
    ('metrics_port = 9464\nmetrics_host =', 'metrics_host', 'an address'),
    ('metrics_textfile = hacluster.prom', 'metrics_textfile', 'absolute'),
    ('metrics_textfile = /tmp/hacluster.txt', 'metrics_textfile', '.prom'),
    ('metrics_textfile_interval = 0', 'metrics_textfile_interval',
     'positive'),
    ('metrics_textfile_interval = soon', 'metrics_textfile_interval',
     'positive'),
])
def test_bad_metrics_options_name_the_option(tmp_path, line, option, words):
    conf = conf_from(tmp_path, line + '\n')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.metrics_settings(conf)
    assert ('[hacluster] %s' % option) in str(e.value)
    assert words in str(e.value)
    # checked where the HA share manager validates its configuration
    conf.set_override('backend_url', 'etcd3+http://127.0.0.1:1',
                      group='coordination')
    with pytest.raises(exceptions.ConfigurationError) as e:
        opts.coordinator_from_conf(conf, cluster='c')
    assert ('[hacluster] %s' % option) in str(e.value)


def test_names_follow_the_prometheus_conventions():
    for name, (kind, labels, doc) in metrics.METRICS.items():
        assert name.startswith(metrics.PREFIX), name
        assert name == name.lower() and ' ' not in name
        assert name.endswith('_total') == (kind == 'counter'), name
        if kind == 'histogram' or 'duration' in name:
            assert name.endswith('_seconds'), name
        assert 'cluster' not in labels and 'node' not in labels
        assert doc and kind in ('gauge', 'counter', 'histogram')


def test_a_histogram_counts_a_value_on_a_bound_in_that_bucket():
    h = metrics.Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    buckets, total, count = h.snapshot()
    assert buckets == [(0.1, 2), (1.0, 4), (float('inf'), 5)]
    assert count == 5 and total == pytest.approx(8.65)


class _FakeMetrics:
    def __init__(self, families):
        self._families = families

    def families(self):
        return self._families


def _sample_families():
    out = metrics._Families({'cluster': 'c "1"\\', 'node': 'n1'})
    out.gauge('hacluster_member_up', 1)
    out.counter('hacluster_session_renewals_total', 12)
    out.gauge('hacluster_task_last_duration_seconds', 0.25, task='t',
              mode='leader')
    h = metrics.Histogram(metrics.LOCK_WAIT_BUCKETS)
    h.observe(0.3)
    out.histogram('hacluster_lock_wait_seconds', h)
    out.gauge('hacluster_session_since_renewal_seconds', None)   # absent
    return out.families()


def _parsed(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in prom_parser.text_string_to_metric_families(text)
            for s in fam.samples}


def test_the_fallback_text_format_reads_as_prometheus_clients_own():
    from prometheus_client import exposition
    from prometheus_client import registry
    fams = _sample_families()
    reg = registry.CollectorRegistry(auto_describe=False)
    reg.register(metrics._Collector(_FakeMetrics(fams)))
    theirs = exposition.generate_latest(reg).decode()
    ours = metrics.render_text(fams).decode()
    assert _parsed(ours) == _parsed(theirs)
    parsed = _parsed(ours)
    base = (('cluster', 'c "1"\\'), ('node', 'n1'))
    assert parsed[('hacluster_session_renewals_total', base)] == 12
    assert parsed[('hacluster_lock_wait_seconds_bucket',
                   tuple(sorted(base + (('le', '0.25'),))))] == 0
    assert parsed[('hacluster_lock_wait_seconds_bucket',
                   tuple(sorted(base + (('le', '0.5'),))))] == 1
    assert not any(name == 'hacluster_session_since_renewal_seconds'
                   for name, _ in parsed)


def test_an_unknown_name_or_label_is_refused():
    out = metrics._Families({'cluster': 'c', 'node': 'n'})
    with pytest.raises(KeyError):
        out.gauge('hacluster_no_such_thing', 1)
    with pytest.raises(ValueError):
        out.gauge('hacluster_task_paused', 1, task='t')     # no mode


def _unstarted():
    # never started: nothing here talks to etcd
    return hacluster.get_coordinator('etcd3+http://127.0.0.1:1', 'c1', 'n1')


def test_hooks_are_off_until_metrics_are_used():
    coord = _unstarted()
    assert coord.lock_registry.observe_wait is None
    assert coord.lock_registry.observe_hold is None
    assert coord.session.observe_renewal is None
    m = coord.metrics
    assert coord.metrics is m
    assert coord.lock_registry.observe_wait is not None
    assert coord.session.observe_renewal is not None


def test_a_stopped_coordinator_reports_its_member_down():
    coord = _unstarted()
    parsed = _parsed(coord.metrics.render().decode())
    base = (('cluster', 'c1'), ('node', 'n1'))
    assert parsed[('hacluster_member_up', base)] == 0
    assert parsed[('hacluster_is_leader', base)] == 0
    assert parsed[('hacluster_claims_open', base)] == 0


def test_single_node_coordinators_export_no_metrics(tmp_path):
    coord = hacluster.get_coordinator('file://%s' % tmp_path, 'c1', 'n1')
    with pytest.raises(exceptions.ConfigurationError) as e:
        metrics.serve(coord)
    assert 'single-node' in str(e.value)


def test_an_address_in_use_is_an_error_naming_it(tmp_path, caplog):
    coord = _unstarted()
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        # SO_REUSEADDR does not let a second socket listen on a listening
        # port
        with pytest.raises(exceptions.HAClusterError) as e:
            coord.metrics.serve('127.0.0.1', port)
        assert '127.0.0.1:%d' % port in str(e.value)
        # from the configuration: logged, not raised (monitoring must not
        # take manila-share down)
        conf = conf_from(tmp_path, 'metrics_port = %d\n' % port)
        assert metrics.start_from_conf(coord, conf) == []
        assert '[hacluster] metrics_port = %d' % port in caplog.text
    finally:
        taken.close()


def test_the_endpoint_serves_metrics_only():
    coord = _unstarted()
    server = coord.metrics.serve('127.0.0.1', 0)
    try:
        resp = urllib.request.urlopen(server.url, timeout=5)
        assert resp.headers['Content-Type'].startswith('text/plain')
        assert b'hacluster_member_up{' in resp.read()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url.replace('/metrics', '/x'),
                                   timeout=5)
        assert e.value.code == 404
    finally:
        coord.metrics.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)
