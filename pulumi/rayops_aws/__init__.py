"""The rayops AWS stack: network, storage, node identity and cluster components.

``__main__.py`` (the Pulumi program) reads the stack configuration once with
:func:`rayops_aws.settings.load_settings` and hands it to :func:`rayops_aws.program.build`, which
returns exactly the stack-output contract v1 (see ``rayops/contract.schema.json``).
"""
