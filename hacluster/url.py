"""Backend URLs: parsing, validation, and scrubbing of secrets.

hacluster reads the URL operators already give manila in
``[coordination] backend_url``, spelled as tooz spells it:

* ``etcd3+http://HOST:PORT`` and ``etcd3+https://HOST:PORT?ca_cert=...&
  cert_key=...&cert_cert=...`` -- etcd through its gRPC gateway;
* several endpoints separated by commas: ``etcd3+http://h1:2379,h2:2379``
  (hacluster fails over between them);
* ``user:password@`` before the hosts: etcd authentication;
* ``file:///path`` or no URL at all: single-node mode (local file locks).

:func:`scrub` removes the password from any text that may contain a URL; every
message and log line hacluster writes passes through it.
"""

import re
from urllib.parse import parse_qs, unquote, urlsplit

from hacluster import exceptions

ETCD_SCHEMES = {'etcd3+http': 'http', 'etcd3+https': 'https'}
_QUERY_OPTIONS = ('ca_cert', 'cert_key', 'cert_cert', 'timeout',
                  'api_version')

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
    (for ``file://``), ``safe`` (the URL with its password masked).
    """

    def __init__(self, kind, safe, **attrs):
        self.kind = kind
        self.safe = safe
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


def parse(url, option='backend_url'):
    """Parse and validate a backend URL.

    :param url: the URL, or None/'' for single-node mode without a lock
        directory of its own.
    :param option: the option name to cite in errors.
    :returns: :class:`BackendURL`.
    :raises ConfigurationError: naming ``option`` and what is wrong (with
        the password scrubbed).
    """
    if url is None or url == '':
        return BackendURL('file', safe='', path=None)
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
        return BackendURL('file', safe=safe, path=path)
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
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in _QUERY_OPTIONS:
            raise bad('unknown option %r (known: %s)'
                      % (key, ', '.join(_QUERY_OPTIONS)))
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
                      api_path=api_path)
