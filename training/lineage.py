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
    while (parent := _parent(current)) and parent["name"] not in seen:
        chain.append(parent["name"])
        seen.add(parent["name"])
        try:
            current = adapters.resolve(parent["name"], data_dir)
        except adapters.AdapterError:
            break
        if current.created_at != parent.get("created_at"):  # another adapter took the name
            break
    return chain[::-1]


def _parent(info: adapters.AdapterInfo) -> dict | None:
    """The parent record meta.json holds, if it names one."""
    parent = (info.meta or {}).get("parent")
    return parent if isinstance(parent, dict) and isinstance(parent.get("name"), str) else None


def parents(infos: list[adapters.AdapterInfo]) -> dict[str, str]:
    """Each adapter that continues another -> its parent, under the name the parent has
    now (votes cast before a rename count under the new name; a deleted parent keeps the
    name it had, which its votes still carry)."""
    current = {old: info.name for info in infos for old in adapters.names(info)}
    return {info.name: current.get(parent["name"], parent["name"])
            for info in infos if (parent := _parent(info))}


def chain(name: str, parents: dict[str, str]) -> list[str]:
    """``name``'s lineage, first ancestor first, from a ``parents`` map (no disk access)."""
    names = [name]
    while (parent := parents.get(names[-1])) and parent not in names:
        names.append(parent)
    return names[::-1]
