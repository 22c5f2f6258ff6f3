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

"""Drive manila-share the way manila-api and the scheduler do.

For tests and the demo: no manila-api or scheduler runs there, so this
writes the database records manila-api would write and sends the RPC cast
the scheduler would send, through manila's own modules (``manila.db``,
``manila.share.rpcapi``) -- the share service cannot tell the difference.

    python -m hacluster.testing.manila_client --config-file C create 3
    python -m hacluster.testing.manila_client --config-file C status
    python -m hacluster.testing.manila_client --config-file C \\
        set-status ID STATUS
    python -m hacluster.testing.manila_client --config-file C delete ID...
    python -m hacluster.testing.manila_client --config-file C \\
        allow-access ID 10.0.0.7
    python -m hacluster.testing.manila_client --config-file C access ID

Every command prints one JSON document on stdout. The config file needs
``[DEFAULT] host`` and ``enabled_share_backends`` (the backend whose queue
gets the casts), ``transport_url`` and ``[database] connection``.
"""

import argparse
import json
import sys

PROJECT = 'hacluster-project'
USER = 'hacluster-user'
SHARE_TYPE = 'hacluster-dhss-false'


def _init(config_file):
    from oslo_config import cfg

    from manila.common import config  # noqa: F401  (registers options)
    from manila import rpc
    cfg.CONF(['--config-file', config_file], project='manila')
    rpc.init(cfg.CONF)
    return cfg.CONF


def _context():
    from manila import context
    ctx = context.get_admin_context()
    ctx.project_id = PROJECT
    ctx.user_id = USER
    return ctx


def _backend_host(conf):
    backends = conf.enabled_share_backends
    if not backends:
        raise SystemExit('client: [DEFAULT] enabled_share_backends is not '
                         'set in the config file')
    return '%s@%s' % (conf.host, backends[0])


def _share_type(ctx):
    from manila import db
    from manila import exception
    try:
        return db.share_type_get_by_name(ctx, SHARE_TYPE)
    except exception.ShareTypeNotFoundByName:
        try:
            return db.share_type_create(ctx, {
                'name': SHARE_TYPE,
                'extra_specs': {'driver_handles_share_servers': 'False'}})
        except exception.ShareTypeExists:
            return db.share_type_get_by_name(ctx, SHARE_TYPE)


def create(conf, count, size, name_prefix):
    from manila import db
    from manila.share import rpcapi

    ctx = _context()
    stype = _share_type(ctx)
    host = _backend_host(conf)
    pool_host = '%s#fake_pool_for_%s' % (host, conf.enabled_share_backends[0])
    api = rpcapi.ShareAPI()
    out = []
    for i in range(count):
        share = db.share_create(ctx, {
            'user_id': USER, 'project_id': PROJECT, 'size': size,
            'share_proto': 'NFS', 'display_name': '%s-%d' % (name_prefix, i),
            'status': 'creating', 'share_type_id': stype['id'],
            'host': pool_host, 'is_public': False,
        })
        instance = share.instance
        api.create_share_instance(ctx, instance, pool_host, request_spec={},
                                  filter_properties={})
        out.append({'share_id': share['id'], 'instance_id': instance['id']})
    return out


def status(conf):
    from manila import db
    ctx = _context()
    out = {}
    for si in db.share_instance_get_all(ctx):
        out[si['id']] = {'share_id': si['share_id'], 'status': si['status'],
                         'host': si['host'],
                         'updated_at': str(si['updated_at'])}
    return out


def set_status(conf, instance_id, new_status):
    from manila import db
    ctx = _context()
    db.share_instance_update(ctx, instance_id, {'status': new_status})
    return {'instance_id': instance_id, 'status': new_status}


def delete(conf, instance_ids):
    from manila import db
    from manila.share import rpcapi
    ctx = _context()
    api = rpcapi.ShareAPI()
    for instance_id in instance_ids:
        db.share_instance_update(ctx, instance_id, {'status': 'deleting'})
        api.delete_share_instance(ctx, db.share_instance_get(
            ctx, instance_id, with_share_data=True))
    return {'deleting': list(instance_ids)}


def allow_access(conf, instance_id, ip):
    """Grant ``ip`` rw access to the instance's share, as manila-api does:
    the rule in the database, then the update_access cast."""
    from manila import db
    from manila.share import rpcapi
    ctx = _context()
    instance = db.share_instance_get(ctx, instance_id, with_share_data=True)
    rule = db.share_access_create(ctx, {
        'share_id': instance['share_id'], 'access_type': 'ip',
        'access_to': ip, 'access_level': 'rw'})
    rpcapi.ShareAPI().update_access(ctx, instance)
    return {'access_id': rule['id']}


def access(conf, instance_id):
    """``{access_to: state}`` of the instance's rules."""
    from manila import db
    ctx = _context()
    return {r['access_to']: r['state'] for r in
            db.share_access_get_all_for_instance(ctx, instance_id)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='manila_client')
    parser.add_argument('--config-file', required=True)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('create')
    p.add_argument('count', type=int)
    p.add_argument('--size', type=int, default=1)
    p.add_argument('--name', default='hashare')
    sub.add_parser('status')
    p = sub.add_parser('set-status')
    p.add_argument('instance_id')
    p.add_argument('status')
    p = sub.add_parser('delete')
    p.add_argument('instance_ids', nargs='+')
    p = sub.add_parser('allow-access')
    p.add_argument('instance_id')
    p.add_argument('ip')
    p = sub.add_parser('access')
    p.add_argument('instance_id')
    args = parser.parse_args(argv)
    conf = _init(args.config_file)
    if args.command == 'create':
        result = create(conf, args.count, args.size, args.name)
    elif args.command == 'status':
        result = status(conf)
    elif args.command == 'set-status':
        result = set_status(conf, args.instance_id, args.status)
    elif args.command == 'allow-access':
        result = allow_access(conf, args.instance_id, args.ip)
    elif args.command == 'access':
        result = access(conf, args.instance_id)
    else:
        result = delete(conf, args.instance_ids)
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')
    sys.stdout.flush()
    from manila import rpc
    rpc.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
