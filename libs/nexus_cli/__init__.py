"""The ``nexus`` command: ``up`` runs the local stack, ``new-service`` copies the template.

Modules: ``main`` (arguments), ``stack`` (what ``up`` does, in order), ``supervisor`` (one child
process: spawn, log pump, stop), ``etcd``, ``services`` (which services, on which ports),
``devkeys`` (the dev admin key and internal token), ``newservice``, ``output`` (prefixes,
colour, the table).
"""
