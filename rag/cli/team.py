"""`rag keys add|list|revoke`: the API keys of a server's data folder (rag.keys)."""
from __future__ import annotations

import argparse

from rag.cli.common import settings_from


def _store(args: argparse.Namespace):
    from rag.keys import KeyStore

    return KeyStore(settings_from(args).data_dir)


def cmd_keys_add(args: argparse.Namespace) -> int:
    store = _store(args)
    token = store.add(args.name, args.scope)
    print(f"added the {args.scope} key {args.name!r} to {store.path}; its token, shown this once (send it as "
          "`Authorization: Bearer TOKEN`):")
    print(token)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _store(args).keys()
    if not keys:
        print("no keys: the server answers without one (on 127.0.0.1 only, unless --insecure-no-auth)")
        return 0
    print(f"{'name':<24} {'scope':<6} {'created':<21} last used")
    for key in keys:
        print(f"{key.name:<24} {key.scope:<6} {key.created:<21} {key.last_used or 'never'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _store(args).revoke(args.name)
    print(f"revoked {args.name!r}")
    return 0
