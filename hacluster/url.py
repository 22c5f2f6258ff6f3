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

"""Backend URLs: parsing, validation, and scrubbing of secrets.

hacluster reads its etcd URL from ``[hacluster] backend_url`` or, when that
is unset, from manila's ``[coordination] backend_url`` (:func:`resolve`:
the one place that decides). Either is spelled as tooz spells it:

* ``etcd3+http://HOST:PORT`` and ``etcd3+https://HOST:PORT?ca_cert=...&
  cert_key=...&cert_cert=...`` -- etcd through its gRPC gateway;
* several endpoints separated by commas: ``etcd3+http://h1:2379,h2:2379``
  (hacluster fails over between them);
* ``user:password@`` before the hosts: etcd authentication;
* ``file:///path`` or no URL at all: single-node mode (local file locks).

tooz -- which manila-api, manila-scheduler and manila-share (without the HA
manager) start on ``[coordination] backend_url`` -- reads one endpoint and
no credentials, so the multi-endpoint and authenticated forms belong in
``[hacluster] backend_url``; tooz's own query options (``lock_timeout``...)
are accepted and ignored in ``[coordination] backend_url``.

:func:`scrub` removes the password from any text that may contain a URL; every
message and log line hacluster writes passes through it.

:func:`check_tls_files` and :func:`tls_hint` turn TLS mistakes (a missing
certificate file, an untrusted CA, a certificate made out to another host, a
missing client certificate) into messages that name the URL option to fix.
"""

import logging
import os
import re
import ssl
from urllib.parse import parse_qs
from urllib.parse import unquote
from urllib.parse import urlsplit

from hacluster import exceptions

LOG = logging.getLogger(__name__)

ETCD_SCHEMES = {'etcd3+http': 'http', 'etcd3+https': 'https'}
_QUERY_OPTIONS = ('ca_cert', 'cert_key', 'cert_cert', 'timeout',
                  'api_version')
#: The option names :func:`resolve` cites (as operators write them).
HACLUSTER_OPTION = '[hacluster] backend_url'
COORDINATION_OPTION = '[coordination] backend_url'
#: Query options of tooz's etcd3 driver that are tooz's own timings
#: (``timeout`` is its socket timeout *and* the default TTL of its lock and
#: membership leases). In ``[coordination] backend_url``, which tooz reads
#: too, they are accepted and ignored: hacluster's timings are
#: ``[hacluster] request_timeout``, ``lease_ttl``...
TOOZ_TIMING_OPTIONS = ('timeout', 'lock_timeout', 'membership_timeout')

# scheme://user:secret@  ->  scheme://user:***@   (any scheme, anywhere in
# a text; oslo.utils' mask_password does not cover this form). The secret
# runs to the *last* @ before white space: a password may contain '@', '/'
# or '?' (generated base64 passwords do); masking a little too much is
# harmless, showing any of it is not.
_USERINFO_RE = re.compile(
    r'([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(\S*)@')
# ?password=...  &secret=...  token=...
_QUERY_SECRET_RE = re.compile(
    r'((?:password|passwd|secret|token|auth_token)=)([^&\s]*)', re.I)


def scrub(text):
    """Return ``text`` with URL passwords and password parameters masked.

    Safe on any string (log lines, exception messages, whole URLs). Never
    raises; non-strings are converted with ``str()``.
    """
    if text is None:
        return text
    text = str(text)
    text = _USERINFO_RE.sub(r'\1:***@', text)
    return _QUERY_SECRET_RE.sub(r'\1***', text)


class BackendURL:
    """A parsed backend URL.

    Attributes: ``kind`` (``'etcd'`` or ``'file'``), ``protocol``
    (``'http'``/``'https'``), ``endpoints`` (list of ``(host, port)``),
    ``username``/``password`` (or None), ``ca_cert``, ``cert_key``,
    ``cert_cert``, ``timeout`` (seconds or None), ``api_path``, ``path``
    (for ``file://``), ``safe`` (the URL with its password masked),
    ``option`` (the option it was read from, as errors cite it),
    ``ignored`` (the query options accepted but not used, by name).
    """

    def __init__(self, kind, safe, **attrs):
        self.kind = kind
        self.safe = safe
        self.option = attrs.get('option', 'backend_url')
        self.ignored = attrs.get('ignored', {})
        self.protocol = attrs.get('protocol')
        self.endpoints = attrs.get('endpoints', [])
        self.username = attrs.get('username')
        self.password = attrs.get('password')
        self.ca_cert = attrs.get('ca_cert')
        self.cert_key = attrs.get('cert_key')
        self.cert_cert = attrs.get('cert_cert')
        self.timeout = attrs.get('timeout')
        self.api_path = attrs.get('api_path')
        self.path = attrs.get('path')

    def __repr__(self):
        return '<BackendURL %s>' % self.safe

    def tooz_problem(self):
        """Why tooz (manila's ``[coordination]`` coordinator) cannot use
        this URL as it is, or None: tooz's etcd3 driver reads one endpoint
        and no user name."""
        if self.kind != 'etcd':
            return None
        if len(self.endpoints) > 1:
            return ('it lists %d endpoints and tooz reads one ("Port could '
                    'not be cast to integer value")' % len(self.endpoints))
        if self.username:
            return 'tooz does not authenticate to etcd (user %s@)' % (
                self.username)
        return None


def parse(url, option='backend_url', ignore=()):
    """Parse and validate a backend URL.

    :param url: the URL, or None/'' for single-node mode without a lock
        directory of its own; a :class:`BackendURL` is returned as it is.
    :param option: the option name to cite in errors.
    :param ignore: query options to accept and ignore (recorded in
        ``ignored``), e.g. :data:`TOOZ_TIMING_OPTIONS`; tooz's other
        options mean the same to hacluster.
    :returns: :class:`BackendURL`.
    :raises ConfigurationError: naming ``option`` and what is wrong (with
        the password scrubbed).
    """
    if isinstance(url, BackendURL):
        return url
    if url is None or url == '':
        return BackendURL('file', safe='', path=None, option=option)
    if not isinstance(url, str):
        raise exceptions.ConfigurationError(
            '%s must be a string, got %s' % (option, type(url).__name__))
    safe = scrub(url)

    def bad(why):
        return exceptions.ConfigurationError(
            'invalid %s %r: %s' % (option, safe, why))

    scheme, sep, rest = url.partition('://')
    if not sep:
        raise bad('expected SCHEME://..., e.g. etcd3+http://10.0.0.1:2379')
    scheme = scheme.lower()
    if scheme == 'file':
        path = unquote(urlsplit(url).path)
        if not path:
            raise bad('file:// URL needs a directory path, '
                      'e.g. file:///var/lib/manila/locks')
        return BackendURL('file', safe=safe, path=path, option=option)
    if scheme not in ETCD_SCHEMES:
        raise bad('unsupported scheme %r; use etcd3+http, etcd3+https or '
                  'file' % scheme)

    netloc, _, query = rest.partition('?')
    netloc, _, path = netloc.partition('/')
    if path.strip('/'):
        raise bad('unexpected path /%s after the hosts' % path)
    username = password = None
    if '@' in netloc:
        userinfo, _, netloc = netloc.rpartition('@')
        username, _, password = userinfo.partition(':')
        username = unquote(username)
        password = unquote(password)
        if not username:
            raise bad('empty user name before @')
    if not netloc:
        raise bad('no host given')
    endpoints = []
    for part in netloc.split(','):
        part = part.strip()
        if not part:
            raise bad('empty endpoint in the host list')
        if part.startswith('['):
            host, _, port = part[1:].partition(']')
            port = port[1:] if port.startswith(':') else ''
        else:
            host, _, port = part.rpartition(':') if ':' in part else (
                part, '', '')
        if not host:
            raise bad('endpoint %r has no host' % part)
        if port == '':
            port = 2379
        else:
            try:
                port = int(port)
            except ValueError:
                raise bad('endpoint %r: port %r is not a number'
                          % (part, port)) from None
        if not 0 < port < 65536:
            raise bad('endpoint %r: port %d out of range' % (part, port))
        endpoints.append((host, port))

    options = {}
    ignored = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key in ignore:
            ignored[key] = values[-1]
            continue
        if key not in _QUERY_OPTIONS:
            hint = ''
            if key in TOOZ_TIMING_OPTIONS:
                hint = ('; %s is an option of tooz, which reads [coordination]'
                        ' backend_url: hacluster\'s timings are [hacluster] '
                        'lease_ttl, renew_deadline, request_timeout' % key)
            raise bad('unknown option %r (known: %s)%s'
                      % (key, ', '.join(_QUERY_OPTIONS), hint))
        options[key] = values[-1]
    protocol = ETCD_SCHEMES[scheme]
    if protocol == 'http' and any(
            options.get(k) for k in ('ca_cert', 'cert_key', 'cert_cert')):
        raise bad('ca_cert/cert_key/cert_cert need etcd3+https')
    if bool(options.get('cert_key')) != bool(options.get('cert_cert')):
        raise bad('cert_key and cert_cert must be given together')
    timeout = None
    if options.get('timeout'):
        try:
            timeout = float(options['timeout'])
        except ValueError:
            raise bad('timeout %r is not a number' % options['timeout']) \
                from None
        if timeout <= 0:
            raise bad('timeout must be positive')
    api_path = None
    if options.get('api_version'):
        api_path = '/' + options['api_version'].strip('/') + '/'
    return BackendURL('etcd', safe=safe, protocol=protocol,
                      endpoints=endpoints, username=username,
                      password=password, ca_cert=options.get('ca_cert'),
                      cert_key=options.get('cert_key'),
                      cert_cert=options.get('cert_cert'), timeout=timeout,
                      api_path=api_path, option=option, ignored=ignored)


def resolve(hacluster_url=None, coordination_url=None):
    """The backend URL hacluster uses, from its two options: the one place
    that decides (the HA manager, ``opts.coordinator_from_conf`` and the
    ``hacluster`` command all come here).

    :param hacluster_url: ``[hacluster] backend_url``: hacluster's own
        (several endpoints, TLS, ``user:password@``); used when set.
    :param coordination_url: manila's ``[coordination] backend_url``, used
        when the former is unset. tooz reads it too (manila-api,
        manila-scheduler), so tooz's timing options are accepted there and
        ignored (a debug log line), and a URL tooz cannot read (several
        endpoints, a user name) is used but logged as a warning.
    :returns: :class:`BackendURL`; ``option`` names the option it came
        from.
    :raises ConfigurationError: the URL in use is invalid; the message
        names its option, the password scrubbed.

    Does not block.
    """
    if isinstance(hacluster_url, str):
        hacluster_url = hacluster_url.strip()
    if hacluster_url:
        return parse(hacluster_url, option=HACLUSTER_OPTION)
    if isinstance(coordination_url, str):
        coordination_url = coordination_url.strip()
    parsed = parse(coordination_url, option=COORDINATION_OPTION,
                   ignore=TOOZ_TIMING_OPTIONS)
    for key, value in sorted(parsed.ignored.items()):
        LOG.debug('%s: ignoring tooz\'s option %s=%s (hacluster\'s timings '
                  'are [hacluster] lease_ttl, renew_deadline, '
                  'request_timeout)', COORDINATION_OPTION, key, value)
    problem = parsed.tooz_problem()
    if problem:
        LOG.warning('%s = %s: %s; manila-api and manila-scheduler start tooz '
                    'on this option and fail. Move this URL to [hacluster] '
                    'backend_url and give [coordination] backend_url one '
                    'endpoint (etcd3+http://HOST:PORT)',
                    COORDINATION_OPTION, parsed.safe, problem)
    return parsed


# the URL options that name files, in the order they are checked
_TLS_FILE_OPTIONS = ('ca_cert', 'cert_cert', 'cert_key')
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)
# X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, _DEPTH_ZERO_SELF_SIGNED_CERT,
# _SELF_SIGNED_CERT_IN_CHAIN, _UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
# _UNABLE_TO_VERIFY_LEAF_SIGNATURE: the chain ends in a CA not trusted here
_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)
# alerts a TLS server sends when it wants a (better) client certificate
_CLIENT_CERT_ALERTS = ('ALERT_BAD_CERTIFICATE', 'ALERT_CERTIFICATE_REQUIRED',
                       'ALERT_UNKNOWN_CA', 'ALERT_CERTIFICATE_UNKNOWN',
                       'ALERT_HANDSHAKE_FAILURE')


def check_tls_files(parsed, option=None):
    """Check that the files a parsed URL names can be read.

    :param parsed: a :class:`BackendURL`.
    :param option: the option name to cite in the error (default: the one
        the URL was read from, ``parsed.option``).
    :raises ConfigurationError: naming ``option``, the URL option
        (``ca_cert``, ``cert_cert``, ``cert_key``) and the path that does
        not exist, is not a file or cannot be read by this process.

    Does not block (three ``stat`` calls) and touches no network; it does
    not parse the files (a file that is not PEM fails at the first
    connection).
    """
    option = option or getattr(parsed, 'option', None) or 'backend_url'
    for name in _TLS_FILE_OPTIONS:
        path = getattr(parsed, name, None)
        if not path:
            continue
        if not os.path.exists(path):
            why = 'does not exist'
        elif not os.path.isfile(path):
            why = 'is not a file'
        elif not os.access(path, os.R_OK):
            why = 'cannot be read by this process (uid %d)' % os.getuid()
        else:
            continue
        raise exceptions.ConfigurationError(
            'invalid %s %r: the %s file %s %s' % (option, parsed.safe, name,
                                                  path, why))


def _ssl_error_in(exc):
    """The first :class:`ssl.SSLError` in ``exc``'s chain (its causes,
    contexts, urllib3's ``reason`` and exceptions among its ``args``), or
    None."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return e
        todo.extend([e.__cause__, e.__context__, getattr(e, 'reason', None)])
        todo.extend(a for a in getattr(e, 'args', ())
                    if isinstance(a, BaseException))
    return None


def tls_hint(exc, parsed, option=None):
    """What an operator should change when ``exc`` is a TLS failure.

    :param exc: an exception from a request to etcd (``requests``' own,
        with the :class:`ssl.SSLError` somewhere in its chain).
    :param parsed: the :class:`BackendURL` the request used.
    :param option: the option name to cite (default ``parsed.option``).
    :returns: one sentence naming the URL option at fault (``ca_cert``,
        ``cert_cert``/``cert_key``) or the host name problem, or None if
        ``exc`` is not a TLS failure this function recognises.

    Never raises, never blocks.
    """
    option = option or getattr(parsed, 'option', None) or 'backend_url'
    try:
        err = _ssl_error_in(exc)
    except Exception:    # pragma: no cover - a hint must never fail a call
        return None
    if err is None:
        return None
    if isinstance(err, ssl.SSLCertVerificationError):
        detail = (err.verify_message or str(err)).rstrip('.')
        if err.verify_code in _NAME_MISMATCH or 'mismatch' in detail:
            return ('TLS host name verification failed (%s): etcd\'s '
                    'certificate is not made out to the host name or address '
                    'in %s; use a name the certificate lists (its subject '
                    'alternative names) or reissue the certificate with this '
                    'one' % (detail, option))
        if err.verify_code not in _UNKNOWN_ISSUER:
            return ('TLS certificate verification failed (%s): etcd\'s '
                    'certificate is not valid for this client (check its '
                    'dates and key usage)' % detail)
        if parsed.ca_cert:
            return ('TLS certificate verification failed (%s): etcd\'s '
                    'certificate is not signed by the CA in ca_cert=%s of '
                    '%s' % (detail, parsed.ca_cert, option))
        return ('TLS certificate verification failed (%s): etcd\'s '
                'certificate is not signed by a CA this host trusts; give '
                'the CA certificate that signed it as ca_cert=/path/ca.pem '
                'in %s' % (detail, option))
    reason = getattr(err, 'reason', None) or str(err)
    # In TLS 1.3 a server checks the client's certificate after the
    # client has finished its handshake: its alert races with closing the
    # connection, and the client reads either the alert or just an EOF.
    if isinstance(err, ssl.SSLEOFError) or 'UNEXPECTED_EOF' in reason:
        if parsed.cert_cert:
            return ('etcd closed the TLS connection (%s): it may have '
                    'refused the client certificate in cert_cert=%s of %s '
                    '(it must be signed by a CA in etcd\'s --trusted-ca-file, '
                    'be valid now and allow client authentication), or it '
                    'serves plain HTTP on this port (then use etcd3+http://)'
                    % (reason, parsed.cert_cert, option))
        return ('etcd closed the TLS connection (%s): it probably requires a '
                'client certificate (etcd --client-cert-auth); give one as '
                'cert_cert=/path/cert.pem&cert_key=/path/key.pem in %s. '
                '(Or it serves plain HTTP on this port: then use '
                'etcd3+http://)' % (reason, option))
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        if parsed.cert_cert:
            return ('etcd refused the TLS client certificate in cert_cert=%s '
                    'of %s (%s): it must be signed by a CA in etcd\'s '
                    '--trusted-ca-file, be valid now and allow client '
                    'authentication' % (parsed.cert_cert, option, reason))
        return ('etcd refused the TLS connection (%s): it requires a client '
                'certificate (etcd --client-cert-auth); give one as '
                'cert_cert=/path/cert.pem&cert_key=/path/key.pem in %s'
                % (reason, option))
    return None
