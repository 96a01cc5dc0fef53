"""Which adapters an adapter continues: v1 -> v2 -> v3, from the ``parent`` each job
that ran ``--from`` wrote in its meta.json (see ``parent.py``). Light: the app and the
CLI's listing import it without the training stack."""

from __future__ import annotations

from diptych.models import adapters


def lineage(info: adapters.AdapterInfo, data_dir=None) -> list[str]:
    """Names from the first ancestor to ``info`` (a parent renamed or deleted since is shown
    by the name it had, and ends the walk)."""
    chain, seen = [info.name], {info.name}
    current = info
    while (parent := (current.meta or {}).get("parent")) and parent.get("name") not in seen:
        chain.append(parent["name"])
        seen.add(parent["name"])
        try:
            current = adapters.resolve(parent["name"], data_dir)
        except adapters.AdapterError:
            break
        if current.created_at != parent.get("created_at"):  # another adapter took the name
            break
    return chain[::-1]
