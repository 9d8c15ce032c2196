"""`rag keys add|list|revoke`: the API keys of a server's data folder (rag.service.keys)."""
from __future__ import annotations

import argparse

from rag.cli.common import settings_from


def _store(args: argparse.Namespace):
    from rag.service.keys import KeyStore

    return KeyStore(settings_from(args).data_dir)


def cmd_keys_add(args: argparse.Namespace) -> int:
    store = _store(args)
    token = store.add(args.name, args.scope, args.collections.split(","))
    key = next(k for k in store.keys() if k.name == args.name)
    reach = ("every collection ('*': those made later too, and /metrics; limit it with --collections NAME[,NAME])"
             if key.everywhere else "only the collections " + ", ".join(key.collections))
    print(f"added the {args.scope} key {args.name!r} to {store.path}; it reaches {reach}.")
    print("Its token, shown this once (send it as `Authorization: Bearer TOKEN`):")
    print(token)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _store(args).keys()
    if not keys:
        print("no keys: the server answers without one (on 127.0.0.1 only, unless --insecure-no-auth)")
        return 0
    width = max(11, *(len(",".join(k.collections)) for k in keys))
    print(f"{'name':<24} {'scope':<6} {'collections':<{width}} {'created':<21} last used")
    for key in keys:
        print(f"{key.name:<24} {key.scope:<6} {','.join(key.collections):<{width}} {key.created:<21} "
              f"{key.last_used or 'never'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _store(args).revoke(args.name)
    print(f"revoked {args.name!r}")
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    """The labelled questions of the data folder's feedback as SQuAD 2.0 (`rag eval --squad OUT` scores them)."""
    import json

    from rag.service.catalog import DEFAULT
    from rag.service.collection import collection_settings
    from rag.service.feedback import export_squad
    from rag.store import read_store

    settings = settings_from(args)
    records = _records(settings, args.collection)
    stores = {}

    def documents_of(name: str):
        if name not in stores:
            stores[name] = read_store(settings if name == DEFAULT else collection_settings(settings, name))
        return stores[name].documents

    try:
        squad = export_squad(records, documents_of)
    finally:
        for store in stores.values():
            store.close()
    questions = sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"])
    args.squad.write_text(json.dumps(squad, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"wrote {questions} labelled questions of {len(records)} verdicts to {args.squad} (SQuAD 2.0; "
          f"score a reader on them with `rag eval --squad {args.squad}`)")
    return 0


def cmd_feedback_stats(args: argparse.Namespace) -> int:
    from rag.service.feedback import stats

    print(stats(_records(settings_from(args), args.collection)))
    return 0


def _records(settings, collection: str | None) -> list[dict]:
    """The stored verdicts (of one collection, when named), from wherever the settings' store keeps them."""
    from rag.service.feedback import open_feedback

    feedback = open_feedback(settings)
    try:
        return feedback.records(collection)
    finally:
        feedback.close()
