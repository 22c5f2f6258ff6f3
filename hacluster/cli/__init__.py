"""The ``hacluster`` command: a cliff application.

Commands are cliff ``Command`` classes registered under the entry point
namespace ``hacluster.cli`` (``audit = hacluster.cli.audit:Audit``); each
class's docstring is its help. Listing commands are ``Lister``s, so
``-f table|json|yaml|value|csv``, ``-c COLUMN`` and ``--sort-column`` work
on all of them.
"""
